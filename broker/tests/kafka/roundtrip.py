"""Produce 100,000 messages with the client's defaults and again with acks=all, then a batch in
each compression codec the client supports, and read everything back from the earliest offset:
every acknowledged message is there once, at the offset it was acknowledged with, with its key
and value. Usage: roundtrip.py CLIENT BOOTSTRAP"""

import sys
import time

from clients import consume_partitions, create_topic, fail, log, produce, producer

client, bootstrap = sys.argv[1], sys.argv[2]
tag = client.replace("-", "_")
COUNT = 100_000
PARTITIONS = 3


def round_trip(topic, options, count, value_of):
    create_topic(client, bootstrap, topic, PARTITIONS)
    values = [value_of(i) for i in range(count)]
    keys = [b"k-%d" % (i % 97) for i in range(count)]
    handle = producer(client, bootstrap, **options)
    started = time.time()
    acks = produce(client, handle, topic, values, keys=keys)
    produced = time.time() - started
    if client == "kafka-python":
        handle.close()
    expected = {}
    for index, (partition, offset) in enumerate(acks):
        if offset in expected.setdefault(partition, {}):
            fail(f"{topic}: two messages acknowledged at {partition}/{offset}")
        expected[partition][offset] = (keys[index], values[index])
    for partition, offsets in expected.items():
        if sorted(offsets) != list(range(len(offsets))):
            fail(f"{topic}: partition {partition}'s acknowledged offsets are not 0..{len(offsets)}")
    started = time.time()
    got = consume_partitions(client, bootstrap, topic, range(PARTITIONS), count)
    consumed = time.time() - started
    for partition, records in got.items():
        want = expected.get(partition, {})
        if [offset for offset, _, _ in records] != sorted(want):
            fail(f"{topic}: partition {partition} read back out of order or with gaps")
        for offset, key, value in records:
            if want[offset] != (key, value):
                fail(f"{topic}: {partition}/{offset} is {(key, value)}, sent {want[offset]}")
    log(f"{topic}: {count} messages, produced in {produced:.1f} s, read back in {consumed:.1f} s")


round_trip(f"{tag}-defaults", {}, COUNT, lambda i: b"m-%06d" % i)
acks_all = {"acks": "all"}
round_trip(f"{tag}-acks-all", acks_all, COUNT, lambda i: b"m-%06d" % i)

for codec in ("gzip", "snappy", "lz4", "zstd"):
    options = {"compression_type": codec, "linger_ms": 20} if client == "kafka-python" else {
        "compression.type": codec, "linger.ms": 20}
    round_trip(f"{tag}-{codec}", options, 5000,
               lambda i: (b"compressible %06d " % i) * (1 + i % 7))
log("ok")
