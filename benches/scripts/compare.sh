#!/usr/bin/env bash
# Runs two ringmq-bench commands alternately and prints the median throughput of each and their
# ratio, so a difference is judged against the spread of the runs on a noisy machine.
#
#   benches/scripts/compare.sh ROUNDS "ARGS A" "ARGS B"
#   benches/scripts/compare.sh 10 "--mode produce --count 4000000" \
#       "--mode produce --count 4000000 --broker-arg=--no-metrics"
#
# To compare two builds (a commit against the one before it), point BENCH_A and BENCH_B at their
# ringmq-bench binaries (each starts the ringmq binary built beside it):
#
#   BENCH_B=/tmp/prev-target/release/ringmq-bench benches/scripts/compare.sh 10 "" ""
#
# Needs python3 and a release build (cargo build --release); run from the repository root.
set -euo pipefail
rounds=$1 a=$2 b=$3
bench_a=${BENCH_A:-./target/release/ringmq-bench}
bench_b=${BENCH_B:-$bench_a}
results=$(mktemp)
for _ in $(seq 1 "$rounds"); do
  for side in A B; do
    if [ "$side" = A ]; then args=$a bench=$bench_a; else args=$b bench=$bench_b; fi
    # shellcheck disable=SC2086 # the arguments are meant to split
    if out=$($bench $args --json 2>/dev/null); then
      echo "$out" | python3 -c "import json,sys; r=json.load(sys.stdin); print('$side', r.get('produce_msgs_per_s') or 0, r.get('consume_msgs_per_s') or 0, r['broker_allocs_per_msg'])" >>"$results"
    else
      echo "run $side failed: $bench $args" >&2
    fi
  done
done
python3 - "$results" "$a" "$b" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
for side, args in (("A", sys.argv[2]), ("B", sys.argv[3])):
    produce = sorted(float(r[1]) for r in rows if r[0] == side)
    consume = sorted(float(r[2]) for r in rows if r[0] == side)
    allocs = [float(r[3]) for r in rows if r[0] == side]
    print(f"{side}: {args or '(defaults)'}")
    print(f"   runs {len(produce)}, produce median {statistics.median(produce):,.0f} msgs/s "
          f"(min {produce[0]:,.0f}, max {produce[-1]:,.0f}), consume median "
          f"{statistics.median(consume):,.0f}, allocations/msg median {statistics.median(allocs):.2g}")
med = lambda side, col: statistics.median(float(r[col]) for r in rows if r[0] == side)
for name, col in (("produce", 1), ("consume", 2)):
    if med("B", col):  # a run that does not produce (or consume) reports 0
        print(f"A / B {name}: {med('A', col) / med('B', col):.3f}")
PY
rm -f "$results"
