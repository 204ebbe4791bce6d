"""An idempotent producer (acks=all, retries) sends 20,000 numbered messages in chunks and prints
"acked N" after each; the test kills the broker with SIGKILL partway and starts it again on the
same data and port. The producer retries what was in flight. Every message must then be stored
exactly once: none lost, none duplicated. Usage: idempotent_restart.py CLIENT BOOTSTRAP"""

import sys
import time

from clients import consume_partitions, create_topic, fail, log, produce, producer

client, bootstrap = sys.argv[1], sys.argv[2]
tag = client.replace("-", "_")
topic, COUNT, CHUNK, PARTITIONS = f"{tag}-idempotent", 20_000, 500, 2
create_topic(client, bootstrap, topic, PARTITIONS)
if client == "kafka-python":
    options = {"enable_idempotence": True, "acks": "all", "retries": 2**31 - 1,
               "retry_backoff_ms": 100, "request_timeout_ms": 5000,
               "delivery_timeout_ms": 120_000, "reconnect_backoff_max_ms": 500}
else:
    options = {"enable.idempotence": True, "acks": "all", "retry.backoff.ms": 100,
               "request.timeout.ms": 5000, "message.timeout.ms": 120_000,
               "reconnect.backoff.max.ms": 500}
handle = producer(client, bootstrap, **options)
acked = 0
for start in range(0, COUNT, CHUNK):
    values = [b"n-%06d" % i for i in range(start, start + CHUNK)]
    produce(client, handle, topic, values, keys=[b"%d" % (i % 7) for i in range(start, start + CHUNK)])
    acked += CHUNK
    log(f"acked {acked}")
    time.sleep(0.02)
if client == "kafka-python":
    handle.close()
got = consume_partitions(client, bootstrap, topic, range(PARTITIONS), COUNT)
values = sorted(value for records in got.values() for _, _, value in records)
if values != [b"n-%06d" % i for i in range(COUNT)]:
    seen = {}
    for value in values:
        seen[value] = seen.get(value, 0) + 1
    twice = sum(1 for count in seen.values() if count > 1)
    fail(f"{len(values)} stored for {COUNT} sent: {twice} duplicated, "
         f"{COUNT - len(seen)} missing")
log(f"{COUNT} messages stored exactly once across the broker's restart")
log("ok")
