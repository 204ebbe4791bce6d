"""One face for the two Python Kafka clients the tests run against ringmq's Kafka listener:
kafka-python (pure Python) and confluent-kafka (librdkafka). Each function takes the client's
name first and does the same thing with either, with the client's own defaults unless told."""

import sys
import time

CLIENTS = ("kafka-python", "confluent-kafka")


def fail(message):
    print(f"FAILED: {message}", flush=True)
    sys.exit(1)


def log(message):
    print(message, flush=True)


def create_topic(client, bootstrap, topic, partitions):
    if client == "kafka-python":
        from kafka.admin import KafkaAdminClient, NewTopic

        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.create_topics([NewTopic(topic, partitions, 1)])
        admin.close()
    else:
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": bootstrap})
        for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
            future.result(30)


def producer(client, bootstrap, **options):
    """A producer with the client's defaults, overridden by `options` given in the client's own
    spelling (kafka-python's keyword arguments or librdkafka's dotted settings)."""
    if client == "kafka-python":
        from kafka import KafkaProducer

        return KafkaProducer(bootstrap_servers=bootstrap, **options)
    from confluent_kafka import Producer

    return Producer({"bootstrap.servers": bootstrap, **options})


def produce(client, handle, topic, values, keys=None, partition=None, on_ack=None):
    """Sends every value (bytes) and waits for every acknowledgement; returns (partition, offset)
    of each, in order. `on_ack(count)` is called as acknowledgements arrive."""
    acks = [None] * len(values)
    errors = []
    done = [0]

    def acked(index, partition_offset):
        acks[index] = partition_offset
        done[0] += 1
        if on_ack and done[0] % 1000 == 0:
            on_ack(done[0])

    if client == "kafka-python":
        for index, value in enumerate(values):
            key = keys[index] if keys else None
            future = handle.send(topic, value=value, key=key, partition=partition)
            future.add_callback(lambda meta, i=index: acked(i, (meta.partition, meta.offset)))
            future.add_errback(lambda error, i=index: errors.append((i, error)))
        handle.flush(timeout=120)
    else:
        for index, value in enumerate(values):
            key = keys[index] if keys else None

            def delivered(error, message, i=index):
                if error is not None:
                    errors.append((i, error))
                else:
                    acked(i, (message.partition(), message.offset()))

            while True:
                try:
                    if partition is None:
                        handle.produce(topic, value=value, key=key, on_delivery=delivered)
                    else:
                        handle.produce(topic, value=value, key=key, partition=partition,
                                       on_delivery=delivered)
                    break
                except BufferError:
                    handle.poll(0.1)
            handle.poll(0)
        left = handle.flush(120)
        if left:
            fail(f"{left} messages still queued after 120 s")
    if errors:
        fail(f"{len(errors)} sends failed, first: {errors[0]}")
    missing = [i for i, ack in enumerate(acks) if ack is None]
    if missing:
        fail(f"{len(missing)} sends never acknowledged")
    return acks


def consume_partitions(client, bootstrap, topic, partitions, expected, timeout=120):
    """Reads `expected` records from the start of `partitions` (no group); returns
    {partition: [(offset, key, value), ...]}."""
    got = {partition: [] for partition in partitions}
    count = 0
    deadline = time.time() + timeout
    if client == "kafka-python":
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        consumer.seek_to_beginning()
        while count < expected and time.time() < deadline:
            for tp, records in consumer.poll(timeout_ms=1000).items():
                for record in records:
                    got[tp.partition].append((record.offset, record.key, record.value))
                    count += 1
        consumer.close()
    else:
        from confluent_kafka import Consumer, TopicPartition, OFFSET_BEGINNING

        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused-no-commits",
                             "enable.auto.commit": False})
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        while count < expected and time.time() < deadline:
            for message in consumer.consume(num_messages=10000, timeout=1):
                if message.error():
                    fail(f"consume error: {message.error()}")
                got[message.partition()].append((message.offset(), message.key(), message.value()))
                count += 1
        consumer.close()
    if count != expected:
        fail(f"read {count} of {expected} records from {topic}")
    return got


def committed(client, bootstrap, group, topic, partitions):
    """The group's committed offset of each partition (-1 for none)."""
    if client == "kafka-python":
        from kafka.admin import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        offsets = admin.list_group_offsets(group)
        admin.close()
        # kafka-python 3 answers {group: {partition: offset}}.
        offsets = offsets.get(group, offsets) if isinstance(offsets, dict) else offsets
        by_partition = {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}
        return {p: by_partition.get(p, -1) for p in partitions}
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "enable.auto.commit": False})
    found = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=30)
    consumer.close()
    return {tp.partition: tp.offset if tp.offset >= 0 else -1 for tp in found}
