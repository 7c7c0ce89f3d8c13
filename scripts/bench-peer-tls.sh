#!/usr/bin/env bash
# What TLS costs: three `keel serve` on loopback (as `keel dev` runs them: one runtime thread
# each) in each mode, alternating run by run, each loaded by `keel bench --leader-only` (put,
# then get, at 64 and 256 clients). Prints ops/s, p99 and the servers' own CPU per operation
# (utime+stime of the three server processes over the measured window), then the medians per
# mode. Modes:
#   plain  no TLS at all
#   tls    mutual TLS between members (--certs), plain HTTP for clients
#   https  mutual TLS between members, and HTTPS with client certificates for clients
#          (--https --require-client-cert; keel bench with --cacert/--cert/--key)
#
#   scripts/bench-peer-tls.sh [ROUNDS] [SECONDS] [MODES]   default 3 rounds of 10 s, "plain tls"
#
#   KEEL=path/to/keel   default target/release/keel (NOT built here: cargo build --release)
#
# Ports 17081-17083 (peers) and 18081-18083 (clients) must be free. Run it on an idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
secs=${2:-10}
modes=${3:-plain tls}
keel=${KEEL:-target/release/keel}
work=$(mktemp -d /tmp/keel-peer-tls-XXXXXX)
pids=()
stop() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
trap 'stop; rm -rf "$work"' EXIT
"$keel" certs --dir "$work/certs" --cluster bench --node 1=127.0.0.1 --node 2=127.0.0.1 \
  --node 3=127.0.0.1 --client bench > /dev/null

ticks() { # utime+stime of the processes, in clock ticks; a process that ended counts 0
  local t=0 p f
  for p in "$@"; do
    f=$(cut -d' ' -f14,15 "/proc/$p/stat" 2>/dev/null) || continue
    set -- $f; t=$((t + $1 + $2))
  done
  echo $t
}
peers=1=127.0.0.1:17081,2=127.0.0.1:17082,3=127.0.0.1:17083
endpoints=127.0.0.1:18081,127.0.0.1:18082,127.0.0.1:18083

run_mode() { # mode round
  local mode=$1 round=$2 data="$work/data-$1-$2" extra=() client=() scheme=""
  [ "$mode" != plain ] && extra=(--certs "$work/certs")
  if [ "$mode" = https ]; then
    extra+=(--https --require-client-cert)
    client=(--cacert "$work/certs/ca.pem" --cert "$work/certs/client-bench.pem"
            --key "$work/certs/client-bench-key.pem")
    scheme=https://
  fi
  for id in 1 2 3; do
    RUST_LOG=warn "$keel" serve --id $id --cluster bench --data-dir "$data/node$id" \
      --peer-addr 127.0.0.1:1708$id --client-addr 127.0.0.1:1808$id --peers $peers \
      --threads 1 "${extra[@]}" > "$data.node$id.log" 2>&1 &
    pids+=($!)
  done
  local leader=""
  for _ in $(seq 1 120); do
    leader=$("$keel" status --endpoints "$(echo "$endpoints" | sed "s|[^,]*|$scheme&|g")" \
      "${client[@]}" 2>/dev/null | awk '$3 == "leader" { print $2 }') || true
    [ -n "$leader" ] && break
    sleep 0.5
  done
  [ -n "$leader" ] || { echo "no leader ($mode)"; cat "$data".node*.log; exit 1; }
  for workload in put get; do
    for clients in 64 256; do
      local out="$work/out"
      "$keel" bench --endpoints "$scheme$leader" "${client[@]}" --leader-only --clients $clients \
        --duration "$secs" --warmup 2 --workload $workload > "$out" 2>&1 &
      local bench=$!
      sleep 2
      local t0 s0 t1 s1
      t0=$(ticks "${pids[@]}"); s0=$(date +%s.%N)
      if ! wait $bench; then
        echo "FAILED mode=$mode round=$round $workload c=$clients: $(tail -3 "$out" | tr '\n' ' ')"
        continue
      fi
      t1=$(ticks "${pids[@]}"); s1=$(date +%s.%N)
      local ops p99
      ops=$(grep -oE '[0-9]+ ops/s' "$out" | tail -1 | cut -d' ' -f1)
      p99=$(grep -oE 'p99 [0-9.]+ ?[mµu]s' "$out" | tail -1 | cut -d' ' -f2-)
      awk -v m=$mode -v r=$round -v w=$workload -v c=$clients -v o="${ops:-0}" -v p="$p99" \
          -v cpu=$(( (t1 - t0) * 10 )) -v s0=$s0 -v s1=$s1 \
        'BEGIN { printf "RESULT mode=%s round=%s %s c=%s ops_per_s=%s p99=%s server_cpu_us_per_op=%.1f\n",
                 m, r, w, c, o, p, (o > 0 ? cpu * 1000 / ((s1 - s0) * o) : 0) }'
    done
  done
  stop
  rm -rf "$data"
}

for round in $(seq 1 "$rounds"); do
  if [ $((round % 2)) = 1 ]; then order=$modes; else order=$(echo $modes | tr ' ' '\n' | tac | tr '\n' ' '); fi
  for mode in $order; do run_mode $mode $round; done
done | tee "$work/results"
echo "== medians"
python3 - "$work/results" <<'PY'
import re, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    if not line.startswith("RESULT"):
        continue
    f = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
    words = line.split()
    key = (f["mode"], words[3], f["c"])
    runs.setdefault(key, []).append((float(f["ops_per_s"]), float(f["server_cpu_us_per_op"])))
for (mode, workload, clients), values in sorted(runs.items()):
    ops = statistics.median(v[0] for v in values)
    cpu = statistics.median(v[1] for v in values)
    print(f"{mode:5} {workload} c={clients:3}  median ops/s {ops:8.0f}  median server CPU/op {cpu:5.1f} us  ({len(values)} runs)")
PY
