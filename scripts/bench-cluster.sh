#!/usr/bin/env bash
# The cluster benchmark behind README.md's table: starts `keel dev` on a fresh data dir, waits
# for a leader, runs `keel bench` (put and get at 1, 16, 64 and 256 clients) against the leader,
# and, when kvbench is available, the same series through kvbench (the load generator the etcd
# baseline uses), then stops the cluster and removes its data.
#
#   scripts/bench-cluster.sh [SECONDS]       SECONDS per run, default 10 (after 2 s of warm-up)
#
#   KEEL=path/to/keel         the binary (default target/release/keel, built if missing)
#   KVBENCH=path/to/kvbench   default /tmp/kvbench-target/release/kvbench; skipped if absent
#                             (build it: cargo build --release --manifest-path
#                              ../shared/tools/kvbench/Cargo.toml --target-dir /tmp/kvbench-target)
#
# For etcd side by side, run ../shared/tools/etcd-baseline.sh right after: one benchmark at a
# time on an otherwise idle machine. Not right before: its exit deletes a few hundred MB, and
# on the development VM the disk's fdatasyncs stayed slow for a minute after, which cost this
# script's first (1- and 16-client) runs 30-40%.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
keel=${KEEL:-target/release/keel}
kvbench=${KVBENCH:-/tmp/kvbench-target/release/kvbench}
[ -x "$keel" ] || cargo build --release -p keel-cli
data=$(mktemp -d /tmp/keel-bench-XXXXXX)

"$keel" dev --data-dir "$data" > "$data.log" 2>&1 &
dev=$!
cleanup() {
  kill "$dev" 2>/dev/null && wait "$dev" 2>/dev/null
  rm -rf "$data" "$data.log"
}
trap cleanup EXIT

leader=""
for _ in $(seq 1 120); do
  leader=$("$keel" status 2>/dev/null | awk '$3 == "leader" { print $2 }') || true
  [ -n "$leader" ] && break
  sleep 0.5
done
[ -n "$leader" ] || { echo "no leader within 60 s; keel dev said:" >&2; cat "$data.log" >&2; exit 1; }
echo "leader=$leader"

for workload in put get; do
  for clients in 1 16 64 256; do
    figures=$("$keel" bench --endpoints "$leader" --leader-only --clients "$clients" \
      --duration "$secs" --warmup 2 --workload "$workload" 2>/dev/null | grep -E 'ops in|latency' | tr '\n' ' ')
    echo "keel-bench $workload clients=$clients $figures"
  done
done

if [ -x "$kvbench" ]; then
  common=(--target keel --endpoints "$leader" --value-size 256 --key-space 10000 --duration "$secs" --warmup 2)
  for clients in 1 16 64 256; do echo "kvbench $("$kvbench" "${common[@]}" --workload put --clients "$clients")"; done
  for clients in 1 16 64 256; do echo "kvbench $("$kvbench" "${common[@]}" --workload get --clients "$clients" --preload)"; done
else
  echo "kvbench not found at $kvbench: skipped (see the comment at the top of this script)"
fi
