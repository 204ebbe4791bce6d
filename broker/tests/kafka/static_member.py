"""Static membership (group.instance.id, JoinGroup v5): two static members share a topic; one
is killed with SIGKILL and started again with the same instance id within its session timeout.
It gets its partitions back without a rebalance: the other member's assignment never changes.
Usage: static_member.py CLIENT BOOTSTRAP WORKDIR"""

import os
import signal
import subprocess
import sys
import time

from clients import create_topic, fail, log, produce, producer

client, bootstrap, workdir = sys.argv[1], sys.argv[2], sys.argv[3]
tag = client.replace("-", "_")
topic, group = f"{tag}-static", f"{tag}-static-group"
here = os.path.dirname(os.path.abspath(__file__))
create_topic(client, bootstrap, topic, 4)
handle = producer(client, bootstrap)
produce(client, handle, topic, [b"s-%d" % i for i in range(400)], keys=[b"%d" % i for i in range(400)])


def events(path):
    if not os.path.exists(path):
        return []
    return [line.split()[2:] for line in open(path) if line.split()[2] in ("assign", "revoke", "lost")]


def start(name, path, instance):
    return subprocess.Popen([sys.executable, os.path.join(here, "member.py"), client, bootstrap,
                             group, topic, path, name, instance])


def settled(paths, quiet=2.0, timeout=60):
    """Waits until both members hold partitions and no event happened for `quiet` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        sizes = [len(events(path)) for path in paths]
        time.sleep(quiet)
        if [len(events(path)) for path in paths] == sizes and all(held(path) for path in paths):
            return
    fail("the group did not settle")


def held(path):
    """The partitions a member holds after its events (eager or incremental assignment)."""
    holding = set()
    for kind, *rest in events(path):
        partitions = set() if not rest or rest[0] == "-" else {int(p) for p in rest[0].split(",")}
        if kind == "assign":
            holding = partitions if client == "kafka-python" else holding | partitions
        else:
            holding -= partitions
    return holding


a_path, b_path = os.path.join(workdir, f"{tag}-static-a.log"), os.path.join(workdir, f"{tag}-static-b.log")
a, b = start("a", a_path, "instance-a"), start("b", b_path, "instance-b")
try:
    settled([a_path, b_path])
    before_a, before_b, b_events = held(a_path), held(b_path), len(events(b_path))
    log(f"settled: a holds {sorted(before_a)}, b holds {sorted(before_b)}")
    a.send_signal(signal.SIGKILL)
    a.wait()
    again_path = os.path.join(workdir, f"{tag}-static-a-again.log")
    a = start("a2", again_path, "instance-a")
    deadline = time.time() + 30
    while not held(again_path) and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(2.0)
    if held(again_path) != before_a:
        fail(f"the restarted member holds {sorted(held(again_path))}, before {sorted(before_a)}")
    if len(events(b_path)) != b_events:
        fail(f"the other member saw a rebalance: {events(b_path)[b_events:]}")
    log(f"restarted a holds {sorted(held(again_path))}; b's assignment never changed")
finally:
    for member in (a, b):
        member.send_signal(signal.SIGTERM)
    for member in (a, b):
        try:
            member.wait(30)
        except subprocess.TimeoutExpired:
            member.kill()
log("ok")
