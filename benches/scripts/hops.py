#!/usr/bin/env python3
"""Where the microseconds go between a send and a receive: a per-hop breakdown of paced runs.

Runs `ringmq-bench` (which starts its own broker) under `perf record -a` with the syscall and
scheduler tracepoints the message path crosses, then follows each message through them:

    pacer wakes (clock_nanosleep returns on the bench's pacer thread)
      -> produce written   (the bench's first sendto/writev after it)
      -> produce read      (the broker's first recvfrom returning bytes after that)
      -> fetch answered    (the broker's first writev/sendto on another socket after that)
      -> fetch read        (the bench's first recvfrom returning bytes on another socket than
                            the produce's, after that)

For each hop it prints the median, p90 and p99 of its duration; `sw-in`, the share of messages
for which the thread that takes the hop's second step was switched in during the hop (it was
asleep and had to be woken, or had been preempted); and the median delay from that thread's
wake-up (sched_wakeup) to it running (sched_switch), where at least 5 % of the messages had one.
A first line estimates how late the pacer woke (see `pacer_lateness`). The rate must be low enough for messages not to overlap (the default,
2,000 msgs/s, leaves 500 µs between them); a message whose chain is not complete before the next
pacer wake-up is not counted.

Usage (as root, from the repository root, after `cargo build --release`):

    benches/scripts/hops.py [--rate 2000] [--count 20000] [-- EXTRA RINGMQ-BENCH ARGS]

for example `benches/scripts/hops.py -- --broker-arg=--worker-threads=1 --client-threads 1`.
"""

import argparse
import bisect
import collections
import os
import re
import subprocess
import sys
import tempfile

EVENTS = [
    "syscalls:sys_exit_clock_nanosleep",
    "syscalls:sys_enter_sendto",
    "syscalls:sys_enter_writev",
    "syscalls:sys_enter_recvfrom",
    "syscalls:sys_exit_recvfrom",
    "sched:sched_wakeup",
    "sched:sched_switch",
]

LINE = re.compile(r"^\s*(?P<comm>.+?)\s+(?P<pid>-?\d+)/(?P<tid>-?\d+)\s+(?P<time>\d+\.\d+):\s+"
                  r"(?P<event>[\w:]+):\s*(?P<rest>.*)$")


def percentile(values, fraction):
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def parse(script_output, bench_pid):
    """Events of the bench and its broker, plus wake-ups and switches of their threads."""
    events = []
    for line in script_output.splitlines():
        match = LINE.match(line)
        if not match:
            continue
        events.append((float(match["time"]) * 1e6, int(match["pid"]), int(match["tid"]),
                       match["event"].split(":", 1)[1], match["rest"]))
    events.sort(key=lambda event: event[0])
    # The broker is the bench's child: the other process that reads and writes sockets.
    pids = collections.Counter(pid for _, pid, _, name, _ in events
                               if name in ("sys_exit_recvfrom", "sys_enter_writev"))
    others = [pid for pid, _ in pids.most_common() if pid != bench_pid]
    if bench_pid not in pids or not others:
        sys.exit("hops: found no socket traffic of the bench and its broker in the trace")
    return events, bench_pid, others[0]


def follow(events, bench, broker):
    tids = {}
    for _, pid, tid, _, _ in events:
        if pid in (bench, broker):
            tids[tid] = pid
    wakeups = collections.defaultdict(list)  # tid -> times it was woken
    switch_ins = collections.defaultdict(list)  # tid -> times it was switched in
    steps = []  # (time, process, tid, kind, fd, bytes)
    recv_fd = {}
    for time, pid, tid, name, rest in events:
        if name == "sched_wakeup":
            woken = re.search(r"pid=(\d+)", rest)
            if woken and int(woken[1]) in tids:
                wakeups[int(woken[1])].append(time)
        elif name == "sched_switch":
            following = re.search(r"next_pid=(\d+)", rest)
            if following and int(following[1]) in tids:
                switch_ins[int(following[1])].append(time)
        elif pid not in (bench, broker):
            continue
        elif name == "sys_exit_clock_nanosleep" and pid == bench:
            steps.append((time, pid, tid, "wake", None, 0))
        elif name in ("sys_enter_sendto", "sys_enter_writev"):
            fd = int(re.search(r"fd: (0x[0-9a-f]+)", rest)[1], 16)
            steps.append((time, pid, tid, "write", fd, 0))
        elif name == "sys_enter_recvfrom":
            recv_fd[tid] = int(re.search(r"fd: (0x[0-9a-f]+)", rest)[1], 16)
        elif name == "sys_exit_recvfrom":
            read = int(re.search(r"0x[0-9a-f]+|-?\d+", rest.split("ret:")[-1])[0], 0)
            if read > 0 and tid in recv_fd:
                steps.append((time, pid, tid, "read", recv_fd[tid], read))
    return steps, wakeups, switch_ins


def chains(steps, bench, broker):
    """Each message's five steps, from one pacer wake-up to the next."""
    wakes = [i for i, step in enumerate(steps) if step[3] == "wake"]
    found = []
    for number, start in enumerate(wakes[:-1]):
        end = wakes[number + 1]
        window = steps[start + 1:end]
        chain = [steps[start]]

        def first(predicate, after):
            for step in window:
                if step[0] >= after and predicate(step):
                    return step
            return None

        produce = first(lambda s: s[1] == bench and s[3] == "write", chain[0][0])
        if not produce:
            continue
        received = first(lambda s: s[1] == broker and s[3] == "read", produce[0])
        if not received:
            continue
        answered = first(lambda s: s[1] == broker and s[3] == "write" and s[4] != received[4],
                         received[0])
        if not answered:
            continue
        fetched = first(lambda s: s[1] == bench and s[3] == "read" and s[4] != produce[4],
                        answered[0])
        if not fetched:
            continue
        found.append([chain[0], produce, received, answered, fetched])
    return found


def switched_in(switch_ins, wakeups, tid, start, end):
    """Whether `tid` was switched in within (start, end], and its last wake-up-to-run delay."""
    times = switch_ins.get(tid, [])
    index = bisect.bisect_right(times, end) - 1
    if index < 0 or times[index] <= start:
        return False, None
    woken = wakeups.get(tid, [])
    at = bisect.bisect_right(woken, times[index]) - 1
    delay = times[index] - woken[at] if at >= 0 and woken[at] > start else None
    return True, delay


def pacer_lateness(wakes, period):
    """How late each pacer wake-up was, above the least lateness seen.

    The pacer's send times lie on a grid (one every `period` µs; the trace's clock is the
    schedule's, CLOCK_MONOTONIC), so a wake-up's lateness is its distance past the grid point
    before it. The grid's phase is not in the trace: it is taken as the first empty stretch
    (3 µs with no wake-up) before the most common position within a period, so the figures
    are lateness above the earliest wake-ups seen (the kernel's least timer latency on this
    machine is not included).
    """
    if not wakes:
        return []
    bins = int(period)
    counts = [0] * bins
    for wake in wakes:
        counts[int(wake % period) % bins] += 1
    phase = max(range(bins), key=counts.__getitem__)
    empty = 0
    for _ in range(bins):
        phase = (phase - 1) % bins
        empty = empty + 1 if counts[phase] == 0 else 0
        if empty == 3:
            break
    return [(wake - phase) % period for wake in wakes]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=2000, help="offered msgs/s [2000]")
    parser.add_argument("--count", type=int, default=20000, help="messages measured [20000]")
    parser.add_argument("--bench", default="./target/release/ringmq-bench",
                        help="the ringmq-bench binary [./target/release/ringmq-bench]")
    parser.add_argument("extra", nargs="*", help="more ringmq-bench arguments (after --)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        data = os.path.join(scratch, "perf.data")
        command = [args.bench, "--rate", str(args.rate), "--linger-ms", "0", "--count",
                   str(args.count), "--capacity", "64MiB", "--json", *args.extra]
        # CLOCK_MONOTONIC, the clock of the pacer's schedule, so the grid does not drift.
        record = ["perf", "record", "-q", "-a", "-k", "CLOCK_MONOTONIC", "-o", data]
        for event in EVENTS:
            record += ["-e", event]
        bench = subprocess.Popen(record + ["--"] + command, stdout=subprocess.PIPE, text=True)
        report, _ = bench.communicate()
        if bench.returncode != 0:
            sys.exit(f"hops: the traced run failed (exit {bench.returncode})")
        # The traced command's pid: perf forks it, so it is the one child of perf's process.
        script = subprocess.run(["perf", "script", "-i", data, "--ns", "-F",
                                 "comm,pid,tid,time,event,trace"],
                                capture_output=True, text=True, check=True).stdout
    bench_pid = collections.Counter(
        int(match["pid"]) for match in map(LINE.match, script.splitlines())
        if match and match["event"].endswith("sys_exit_clock_nanosleep")).most_common(1)
    if not bench_pid:
        sys.exit("hops: the trace has no pacer wake-ups (is --rate set, and perf allowed?)")
    events, bench_pid, broker_pid = parse(script, bench_pid[0][0])
    steps, wakeups, switch_ins = follow(events, bench_pid, broker_pid)
    found = chains(steps, bench_pid, broker_pid)
    if not found:
        sys.exit("hops: no message could be followed through the trace")
    hops = ["pacer wake -> produce written (bench: pacer hands the record to the sender task)",
            "produce written -> read by the broker (loopback, broker wake-up)",
            "broker read -> fetch answer written (validate, append, wake the fetch)",
            "fetch answer written -> read by the consumer (loopback, bench wake-up)"]
    print(f"messages followed: {len(found)} of {args.count} (rate {args.rate} msgs/s; "
          f"extra args: {' '.join(args.extra) or 'none'})")
    print(f"{'hop':<78} {'p50 µs':>7} {'p90':>7} {'p99':>7} {'sw-in':>6} {'wake->run p50':>13}")
    lateness = pacer_lateness([chain[0][0] for chain in found], 1e6 / args.rate)
    print(f"{'scheduled send -> pacer wake (lateness above the least seen, see pacer_lateness)':<78} "
          f"{percentile(lateness, 0.5):7.1f} {percentile(lateness, 0.9):7.1f} "
          f"{percentile(lateness, 0.99):7.1f}")
    for index, name in enumerate(hops):
        durations, woken, delays = [], 0, []
        for chain in found:
            start, end = chain[index], chain[index + 1]
            durations.append(end[0] - start[0])
            was, delay = switched_in(switch_ins, wakeups, end[2], start[0], end[0])
            woken += was
            if was and delay is not None:
                delays.append(delay)
        print(f"{name:<78} {percentile(durations, 0.5):7.1f} {percentile(durations, 0.9):7.1f} "
              f"{percentile(durations, 0.99):7.1f} {100 * woken / len(found):5.0f}% "
              + (f"{percentile(delays, 0.5):13.1f}" if len(delays) * 20 >= len(found)
                 else f"{'-':>13}"))
    totals = [chain[4][0] - chain[0][0] for chain in found]
    print(f"{'total: pacer wake -> fetch read':<78} {percentile(totals, 0.5):7.1f} "
          f"{percentile(totals, 0.9):7.1f} {percentile(totals, 0.99):7.1f}")
    if report:
        import json
        measured = json.loads(report)
        measured = measured[0] if isinstance(measured, list) else measured
        latency = measured["latency_us"]
        print(f"the bench's own latency (scheduled send -> record handed out, traced run): "
              f"p50 {latency['p50']:.0f} µs, p99 {latency['p99']:.0f} µs")


if __name__ == "__main__":
    main()
