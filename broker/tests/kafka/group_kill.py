"""A consumer group of three members (processes) with synchronous commits; one is killed with
SIGKILL while messages keep coming. Its partitions move to the others once its session expires
and resume from its committed offsets: nothing is skipped, and the only records read twice are
the ones it had read but not committed. Usage: group_kill.py CLIENT BOOTSTRAP WORKDIR"""

import os
import signal
import subprocess
import sys
import threading
import time

from clients import committed, create_topic, fail, log, produce, producer

client, bootstrap, workdir = sys.argv[1], sys.argv[2], sys.argv[3]
tag = client.replace("-", "_")
topic, group, PARTITIONS = f"{tag}-grouped", f"{tag}-three", 6
here = os.path.dirname(os.path.abspath(__file__))
create_topic(client, bootstrap, topic, PARTITIONS)
handle = producer(client, bootstrap)
ends = {p: 0 for p in range(PARTITIONS)}
lock = threading.Lock()


def send(count, start):
    values = [b"v-%07d" % (start + i) for i in range(count)]
    keys = [b"k-%d" % ((start + i) % 1000) for i in range(count)]
    for partition, offset in produce(client, handle, topic, values, keys=keys):
        with lock:
            ends[partition] = max(ends[partition], offset + 1)


def read(path):
    """(time, partition, offset) of each record, and the assignment events."""
    records, events = [], []
    if os.path.exists(path):
        for line in open(path):
            parts = line.split()
            if len(parts) == 4 and parts[2].isdigit():
                records.append((float(parts[0]), int(parts[2]), int(parts[3])))
            elif len(parts) >= 3:
                events.append((float(parts[0]), " ".join(parts[2:])))
    return records, events


def wait_for(condition, what, timeout=90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.1)
    fail(f"timed out waiting for {what}")


send(6000, 0)
paths = [os.path.join(workdir, f"{tag}-member-{i}.log") for i in range(3)]
members = [
    subprocess.Popen([sys.executable, os.path.join(here, "member.py"), client, bootstrap, group,
                      topic, path, f"m{i}"])
    for i, path in enumerate(paths)
]
try:
    wait_for(lambda: all(read(path)[0] for path in paths), "every member to consume")
    wait_for(lambda: sum(len(read(path)[0]) for path in paths) >= 6000, "the first 6000 records")
    # More records while the victim consumes; kill it mid-stream.
    sender = threading.Thread(target=lambda: [send(200, 6000 + i * 200) or time.sleep(0.05)
                                              for i in range(30)])
    sender.start()
    victim_records = len(read(paths[0])[0])
    wait_for(lambda: len(read(paths[0])[0]) > victim_records + 100, "the victim to consume more")
    members[0].send_signal(signal.SIGKILL)
    members[0].wait()
    killed_at = time.time()
    held = {}
    for path in paths:
        for at, partition, offset in read(path)[0]:
            if at <= killed_at and (partition not in held or at >= held[partition][0]):
                held[partition] = (at, path)
    victim_partitions = sorted(p for p, (_, path) in held.items() if path == paths[0])
    snapshot = committed(client, bootstrap, group, topic, range(PARTITIONS))
    log(f"killed m0 holding partitions {victim_partitions}; committed {snapshot}")
    if not victim_partitions:
        fail("the victim held no partition when it was killed")
    sender.join()
    send(3000, 12000)

    def covered():
        seen = set()
        for path in paths:
            seen.update((p, o) for _, p, o in read(path)[0])
        return all((p, o) in seen for p in range(PARTITIONS) for o in range(ends[p]))

    wait_for(covered, "the survivors to read every record", timeout=120)
    for partition in victim_partitions:
        after = sorted((at, o) for path in paths[1:] for at, p, o in read(path)[0]
                       if p == partition and at > killed_at)
        if not after:
            fail(f"nobody read partition {partition} after the kill")
        if after[0][1] != snapshot[partition]:
            fail(f"partition {partition} resumed at {after[0][1]}, "
                 f"its committed offset was {snapshot[partition]}")
    seen, duplicates = set(), 0
    for path in paths:
        for _, p, o in read(path)[0]:
            duplicates += (p, o) in seen
            seen.add((p, o))
    moved = sum(1 for path in paths[1:] for _, event in read(path)[1] if event.startswith("assign"))
    log(f"{sum(ends.values())} records read; {duplicates} read twice (uncommitted at the kill); "
        f"{moved} assignments seen by the survivors")
finally:
    for member in members[1:]:
        member.send_signal(signal.SIGTERM)
    for member in members:
        try:
            member.wait(30)
        except subprocess.TimeoutExpired:
            member.kill()
log("ok")
