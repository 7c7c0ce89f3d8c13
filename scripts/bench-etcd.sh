#!/usr/bin/env bash
# etcd side by side with scripts/bench-cluster.sh: starts a 3-member etcd 3.4 on loopback
# (../shared/tools/etcd-cluster.sh, Debian's etcd-server, default settings, fsync on), runs the
# same series through kvbench against its leader (put and get at 1, 16, 64 and 256 clients,
# 256-byte values, 10,000 keys; gets after a preload), then stops it and removes its data.
# ../shared/tools/etcd-baseline.sh measures gets at 1 and 64 clients only; the issue's target
# is 3x etcd at 16, 64 and 256.
#
#   scripts/bench-etcd.sh [SECONDS]        SECONDS per run, default 10 (after 2 s of warm-up)
#
#   TOOLS=path/to/shared/tools             default ../shared/tools
#   KVBENCH=path/to/kvbench                default /tmp/kvbench-target/release/kvbench, built if
#                                          missing
#
# Run it right after scripts/bench-cluster.sh, on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
tools=${TOOLS:-../shared/tools}
kvbench=${KVBENCH:-/tmp/kvbench-target/release/kvbench}
command -v etcd > /dev/null || { echo "etcd not found: apt-get install etcd-server etcd-client" >&2; exit 1; }
[ -x "$kvbench" ] || cargo build --release --manifest-path "$tools/kvbench/Cargo.toml" \
  --target-dir "$(dirname "$(dirname "$kvbench")")"
dir=$(mktemp -d /tmp/etcd-bench-XXXXXX)

"$tools/etcd-cluster.sh" start "$dir" > /dev/null 2>&1
cleanup() {
  "$tools/etcd-cluster.sh" stop "$dir" || true
  rm -rf "$dir"
}
trap cleanup EXIT
all=127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379
leader=$(ETCDCTL_API=3 etcdctl --endpoints="$all" endpoint status -w table |
  awk -F'|' '$6 ~ /true/ { gsub(/ /, "", $2); print $2 }')
[ -n "$leader" ] || { echo "etcd elected no leader" >&2; exit 1; }
others=$(echo "$all" | tr , '\n' | grep -vx "$leader" | paste -sd,)
echo "leader=$leader"

common=(--target etcd --endpoints "$leader,$others" --value-size 256 --key-space 10000
  --duration "$secs" --warmup 2)
for clients in 1 16 64 256; do
  echo "etcd put clients=$clients $("$kvbench" "${common[@]}" --workload put --clients "$clients")"
done
for clients in 1 16 64 256; do
  echo "etcd get clients=$clients $("$kvbench" "${common[@]}" --workload get --clients "$clients" --preload)"
done
