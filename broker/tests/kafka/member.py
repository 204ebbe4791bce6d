"""A consumer-group member: consumes TOPIC as a member of GROUP, writes one line per record
("time member partition offset") and per assignment change ("time member assign|revoke
p,p,...") to OUT, and commits synchronously after each batch it has written. SIGTERM closes it
cleanly (it leaves the group). Usage:
member.py CLIENT BOOTSTRAP GROUP TOPIC OUT NAME [INSTANCE_ID]"""

import signal
import sys
import time

client, bootstrap, group, topic, out_path, name = sys.argv[1:7]
instance = sys.argv[7] if len(sys.argv) > 7 else None
out = open(out_path, "a", buffering=1)
stopping = [False]
signal.signal(signal.SIGTERM, lambda *_: stopping.__setitem__(0, True))


def note(line):
    out.write(f"{time.time():.6f} {name} {line}\n")


def partitions(items):
    return ",".join(str(p) for p in sorted(items)) or "-"


if client == "kafka-python":
    from kafka import ConsumerRebalanceListener, KafkaConsumer
    from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
    from kafka.errors import CommitFailedError, KafkaError

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            note(f"revoke {partitions(tp.partition for tp in revoked)}")

        def on_partitions_assigned(self, assigned):
            note(f"assign {partitions(tp.partition for tp in assigned)}")

    options = {}
    if instance:
        options["group_instance_id"] = instance
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
        auto_offset_reset="earliest", session_timeout_ms=6000, heartbeat_interval_ms=500,
        max_poll_records=200, partition_assignment_strategy=[RoundRobinPartitionAssignor],
        **options)
    consumer.subscribe([topic], listener=Listener())
    while not stopping[0]:
        batch = consumer.poll(timeout_ms=200)
        for tp, records in batch.items():
            for record in records:
                note(f"{tp.partition} {record.offset}")
        if batch:
            try:
                consumer.commit()
            except (CommitFailedError, KafkaError) as error:
                note(f"commit-failed {type(error).__name__}")
    consumer.close()
else:
    from confluent_kafka import Consumer, KafkaException

    settings = {
        "bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
        "auto.offset.reset": "earliest", "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500, "partition.assignment.strategy": "cooperative-sticky",
    }
    if instance:
        settings["group.instance.id"] = instance
    consumer = Consumer(settings)
    consumer.subscribe(
        [topic],
        on_assign=lambda c, tps: note(f"assign {partitions(tp.partition for tp in tps)}"),
        on_revoke=lambda c, tps: note(f"revoke {partitions(tp.partition for tp in tps)}"),
        on_lost=lambda c, tps: note(f"lost {partitions(tp.partition for tp in tps)}"),
    )
    while not stopping[0]:
        messages = consumer.consume(num_messages=200, timeout=0.2)
        for message in messages:
            if message.error():
                note(f"error {message.error().code()}")
                continue
            note(f"{message.partition()} {message.offset()}")
        if any(not message.error() for message in messages):
            try:
                consumer.commit(asynchronous=False)
            except KafkaException as error:
                note(f"commit-failed {error.args[0].code()}")
    consumer.close()
out.close()
