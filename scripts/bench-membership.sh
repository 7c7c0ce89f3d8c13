#!/usr/bin/env bash
# The longest gap without a committed write while a 3-member cluster replaces its leader under
# a 64-client write load, keel beside etcd 3.4.
#
#   scripts/bench-membership.sh etcd|keel|both [RUNS]      RUNS per series, default 3
#
# Each run, on a fresh cluster: start the load (LOAD_SECS, default 20); after STEP_AFTER seconds
# (default 5): add a 4th member as a learner and start it, promote it once it has caught up,
# then remove the original leader and stop its process:
#
#   etcd: `etcdctl move-leader` to another original member, then `member remove` (etcd's
#         procedure: a removed etcd leader does not hand over by itself);
#   keel: `keel member remove <leader>`: the leader hands over by itself once the change commits
#         (see step 5 of run_keel on stopping it at once).
#
# Three series: `etcd` and `keel-gapbench` are loaded by scripts/gapbench.py (the same closed-loop
# HTTP load for both: the like-for-like comparison), `keel-bench` by `keel bench --clients 64
# --warmup 0` (keel's own load generator). One load runs at a time (2 cores). With `both`, the
# series alternate run by run: round 1 runs etcd, keel-gapbench, keel-bench; round 2 the keel
# series first, then etcd; and so on, so that neither system always runs first.
#
# Every step is written to an events file, whose offsets from the start of the load are printed
# after the load's own output. Each run then gets one line:
#
#   == RESULT keel-gapbench run 2/3: gap_ms=28.8 gap_at_s=4.925 add_gap_ms=28.8
#      handover_gap_ms=21.2 ops_per_s=10466 errors=86 stall_ms=56.0 remove_at_s=5.325
#      handover_at_s=5.325
#
# gap_ms is the longest interval without any committed write in the whole run (gap_at_s: when
# it began, in seconds from the start of the load's measurement), wherever it falls: on a busy
# 2-core machine it is not always the change's. add_gap_ms is the longest that overlaps adding
# the 4th member (from the first step to the hand-over), handover_gap_ms the longest that
# overlaps the hand-over (from move-leader or member-remove to 1 s after the old leader's
# process was stopped), as far as the load generator tells: gapbench prints its five longest
# gaps, so "<X" means none of them (X: the fifth) overlaps; keel bench prints only the longest,
# so "<=X" means that one lies elsewhere. stall_ms is the longest time one client went without
# a committed write (gapbench only); remove_at_s when the member-remove request was sent;
# handover_at_s when leadership was moved (etcd: move-leader sent; keel: the remove, which hands
# over). At the end, per series, every run's figures and their medians.
#
#   etcd: Debian's etcd 3.4 (installed with apt-get if `etcd` is not on PATH), the 3 members
#         started by $TOOLS/etcd-cluster.sh (TOOLS default ../shared/tools; client ports 2379,
#         22379, 32379), the 4th is m4 on client 42379 / peer 42380.
#   keel: `$KEEL dev --no-restart` (KEEL default target/release/keel, NOT built by this script:
#         cargo build --release) for nodes 1-3, ports 7081-7083 (peers) and 8081-8083
#         (clients); node 4 is `$KEEL serve --id 4 ... --join 127.0.0.1:8081,...` on 7084/8084,
#         which asks to be added as a learner by itself. `keel bench` gets all four endpoints,
#         gapbench the three original ones (as etcd's does).
#
#   PAUSE=5   seconds between runs (deleting a run's data leaves the disk busy for a while)
#   KEEP=1    keep each run's directory (logs, events, data) instead of removing it
#   LOAD_SECS=20 STEP_AFTER=5   length of the load, and when the steps begin
#
# Ports 2379-2380, 22379-22380, 32379-32380, 42379-42380 (etcd) or 7081-7084, 8081-8084 (keel)
# must be free. Run it on an otherwise idle machine (2 cores: the load generator competes with
# the servers).
set -euo pipefail
cd "$(dirname "$0")/.."

target=${1:-}
runs=${2:-3}
case "$target" in etcd|keel|both) ;; *) echo "usage: $0 etcd|keel|both [RUNS]" >&2; exit 2 ;; esac
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || { echo "RUNS must be a positive integer" >&2; exit 2; }

tools=${TOOLS:-../shared/tools}
KEEL=${KEEL:-target/release/keel}
load_secs=${LOAD_SECS:-20}
step_after=${STEP_AFTER:-5}
pause=${PAUSE:-5}
clients=64
gapbench=(python3 scripts/gapbench.py --clients "$clients" --duration "$load_secs"
  --value-size 256 --key-space 10000 --timeout 5)
export ETCDCTL_API=3

# State of the current run, for its EXIT trap: only what this script started.
run_dir=""
pids=()          # processes started by this script (load generators, keel dev, node 4, m4)
stragglers=()    # keel dev's nodes: keel dev stops them, these are stopped after it anyway
etcd_cluster=""  # DIR given to etcd-cluster.sh start (its stop kills exactly DIR/*.pid)
# Every run's RESULT line, without the prefix: "SERIES key=value ...".
results_file=$(mktemp /tmp/bench-membership-results-XXXXXX)

stop_pid() {
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill "$pid" 2>/dev/null || true
  for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup_run() {
  local i
  # Newest first: keel's node 4 stops (handing over if it leads) before `keel dev`, which
  # stops its own nodes, the leader first. Then whatever of those is left, should `keel dev`
  # have needed a SIGKILL.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do stop_pid "${pids[$i]}"; done
  for i in "${stragglers[@]}"; do stop_pid "$i"; done
  pids=()
  stragglers=()
  if [ -n "$etcd_cluster" ]; then "$tools/etcd-cluster.sh" stop "$etcd_cluster" >/dev/null 2>&1 || true; fi
  etcd_cluster=""
  if [ -n "$run_dir" ]; then
    if [ "${KEEP:-0}" = 1 ]; then log "kept $run_dir"; else rm -rf "$run_dir"; fi
  fi
  run_dir=""
}
trap 'cleanup_run; rm -f "$results_file"' EXIT
trap 'exit 130' INT TERM

now() { echo "$EPOCHREALTIME"; }
event() { printf '%s %s\n' "$(now)" "$*" >>"$run_dir/events"; }
log() { echo "  [$(date +%T)] $*" >&2; }

# Retries "$@" every 0.2 s until it succeeds or SECONDS_LEFT (first arg) pass; prints the
# number of attempts and, on stderr, each distinct failure message. Returns 1 on timeout.
retry() {
  local limit=$1; shift
  local deadline=$(( $(date +%s) + limit )) n=0 out last=""
  while :; do
    n=$((n + 1))
    if out=$("$@" 2>&1); then echo "$n"; return 0; fi
    out=$(echo "$out" | tail -1)
    if [ "$out" != "$last" ]; then log "attempt $n: $out"; last=$out; fi
    [ "$(date +%s)" -lt "$deadline" ] || { echo "$n"; return 1; }
    sleep 0.2
  done
}

# Runs "$@" (a member-remove command); succeeds too if it fails because the member is gone
# already (matching $1, the tool's words for that): a retry after an attempt that removed it but
# whose answer was lost (the member that took the request may be the one removed, and stop).
removed_or_gone() {
  local gone=$1 out; shift
  if out=$("$@" 2>&1); then return 0; fi
  echo "$out"
  grep -q -- "$gone" <<<"$out"
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# Waits for the load generator (pid $1, stdout in $2, started at unix time $3), prints its
# output (and its stderr, indented, on stderr). Warns if the last step ended after the load did.
finish_load() {
  local pid=$1 out=$2 start=$3 rc=0
  wait "$pid" || rc=$?
  [ "$rc" = 0 ] || log "load generator exited with $rc"
  cat "$out"
  sed 's/^/  /' "${out%.out}.err" >&2
  awk -v s="$start" -v d="$load_secs" '{ t = $1 } END { exit !(NR && t > s + d) }' "$run_dir/events" &&
    log "warning: the last step ended after the load did; raise LOAD_SECS" || true
}

# Copies stdin to stdout, each line prefixed with the unix time it arrived at.
stamp() {
  local line
  while IFS= read -r line; do printf '%s %s\n' "$EPOCHREALTIME" "$line"; done
}

# Prints the events' offsets from unix time $1 (for a load generator that does not read them).
print_events() {
  awk -v s="$1" '{ t = $1; $1 = ""; printf "event t=%.3f%s\n", t - s, $0 }' "$run_dir/events"
}

# The two windows in which the change can cost writes, from event offsets ("event t=<s>
# <label>" lines on stdin): adding the 4th member (from the first step to the hand-over), and
# the hand-over (from `move-leader` or `member-remove`, whichever comes first, to 1 s after the
# old leader's process was stopped). Prints "A0 A1 H0 H1", or "- - - -".
windows() {
  awk '/^event t=/ {
      t = substr($2, 3) + 0; if (first == "") first = t; last = t
      if (handover == "" && ($3 == "move-leader" || $3 == "member-remove")) handover = t
    } END {
      if (first == "" || handover == "") print "- - - -"
      else printf "%.3f %.3f %.3f %.3f\n", first, handover, handover, last + 1
    }'
}

# Shared by the two below: the gap figure of a window, from the gaps known ("MS@START" words in
# `gaps`, longest first) and `bound`, what to print when none of them overlaps it.
gap_awk='
  function window_gap(gaps, w0, w1, bound,    n, i, g, ms, at, best, list) {
    if (w0 == "-") return "-"
    best = ""
    n = split(gaps, list, " ")
    for (i = 1; i <= n; i++) {
      split(list[i], g, "@"); ms = g[1] + 0; at = g[2] + 0
      if (at < w1 && at + ms / 1000 > w0 && (best == "" || ms > best)) best = ms
    }
    return best == "" ? bound : sprintf("%.1f", best)
  }
  function or_dash(v) { return v == "" ? "-" : v }'

# The first event labelled $1 in the event lines on stdin: its offset, or "-".
event_offset() {
  awk -v l="$1" '$1 == "event" && $3 == l { print substr($2, 3); found = 1; exit }
    END { if (!found) print "-" }'
}

# The RESULT fields of gapbench's output (stdout in $1, stderr in $2), its offsets from its own
# start. add_gap_ms and handover_gap_ms are the longest of the five longest gaps (which
# gapbench prints) that overlap each window, or "<X" when none does (X: the fifth longest).
gapbench_fields() {
  local out=$1 err=$2 line stall top
  line=$(grep -m1 '^target=' "$out" || true)
  stall=$(sed -n 's/^gapbench: longest one-client stall \([0-9.]*\)ms.*/\1/p' "$err" | sed -n 1p)
  top=$(sed -n 's/^gapbench: top gaps //p' "$err" | sed -n 1p)
  awk -v stall="${stall:--}" -v top="${top//ms/}" -v windows="$(windows <"$out")" \
      -v remove="$(event_offset member-remove <"$out")" \
      -v handover="$(windows <"$out" | cut -d' ' -f3)" "$gap_awk"'
    {
      for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
    } END {
      split(windows, w, " ")
      gsub(/s/, "", top)
      n = split(top, last, " "); split(last[n], g, "@"); bound = n ? "<" g[1] : "-"
      printf "gap_ms=%s gap_at_s=%s add_gap_ms=%s handover_gap_ms=%s ops_per_s=%s errors=%s stall_ms=%s remove_at_s=%s handover_at_s=%s\n",
        or_dash(f["longest_gap_ms"]), or_dash(f["gap_start_s"]),
        window_gap(top, w[1], w[2], bound), window_gap(top, w[3], w[4], bound),
        or_dash(f["ops_per_s"]), or_dash(f["errors"]), stall, remove, handover
    }' <<<"$line"
}

# The RESULT fields of `keel bench`'s report (stdout in $1):
#   366799 ops in 20.0 s: 18340 ops/s
#   longest gap without a committed write: 32.2 ms (at 12.69 s)
#   errors: none; retries: 121          (or: errors: unavailable 3, timeout 1; retries: 9)
# with the events' offsets from the start of its measurement in $2 ("event t=..." lines).
# It reports the longest gap only: add_gap_ms and handover_gap_ms are that gap for the window
# it overlaps, "<=X" for one it does not (the step cost at most as much).
keel_bench_fields() {
  awk -v windows="$(windows <<<"$2")" -v remove="$(event_offset member-remove <<<"$2")" "$gap_awk"'
    / ops in .* s: .* ops\/s$/ { ops = $(NF - 1) }
    /^longest gap without a committed write:/ {
      v = $7; u = $8; at = $10
      gap = u == "s" ? v * 1000 : u == "ms" ? v : v / 1000   # s, ms or µs
    }
    /^errors: / {
      sub(/;.*/, ""); sub(/^errors: /, "")
      errors = 0
      if ($0 != "none") { n = split($0, parts, ","); for (i = 1; i <= n; i++) { split(parts[i], e, " "); errors += e[2] } }
    }
    END {
      split(windows, w, " ")
      gaps = gap == "" ? "" : sprintf("%.1f@%s", gap, at)
      bound = gap == "" ? "-" : sprintf("<=%.1f", gap)
      printf "gap_ms=%s gap_at_s=%s add_gap_ms=%s handover_gap_ms=%s ops_per_s=%s errors=%s stall_ms=- remove_at_s=%s handover_at_s=%s\n",
        gap == "" ? "-" : sprintf("%.1f", gap), or_dash(at),
        window_gap(gaps, w[1], w[2], bound), window_gap(gaps, w[3], w[4], bound),
        or_dash(ops), or_dash(errors), remove, remove
    }' "$1"
}

# When `keel bench` began measuring, as unix time, from its progress lines as `stamp` timed
# them in $1 ("<unix time> bench  <k> s ..."): each is printed once k seconds of the
# measurement have passed (with --warmup 0), a little after, never before. Empty if none.
keel_bench_start() {
  awk '$2 == "bench" && $4 == "s" { s = $1 - $3; if (best == "" || s < best) best = s }
    END { if (best != "") printf "%.6f\n", best }' "$1"
}

# Records and prints one run's RESULT line: series $1, run $2, fields $3.
record() {
  echo "$1 $3" >>"$results_file"
  echo "== RESULT $1 run $2/$runs: $3"
}

# ---------------------------------------------------------------------------------------- etcd

etcd_names=(m1 m2 m3)
etcd_clients=(127.0.0.1:2379 127.0.0.1:22379 127.0.0.1:32379)
etcd_all=127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379

setup_etcd() {
  if ! command -v etcd >/dev/null || ! command -v etcdctl >/dev/null; then
    echo "etcd not found: apt-get install -y etcd-server etcd-client" >&2
    apt-get update -qq && apt-get install -y -qq etcd-server etcd-client >/dev/null
  fi
  etcd --version | sed -n 1p >&2  # (sed reads it all: no SIGPIPE for etcd under pipefail)
}

# One etcd run (run number $1); prints gapbench's output (result line, then event lines) and
# the RESULT line.
run_etcd() {
  local r=$1
  run_dir=$(mktemp -d /tmp/gap-etcd-XXXXXX)
  etcd_cluster=$run_dir/cluster
  "$tools/etcd-cluster.sh" start "$etcd_cluster" >"$run_dir/cluster-start.log" 2>&1 ||
    { cat "$run_dir/cluster-start.log" >&2; return 1; }
  : >"$run_dir/events"

  "${gapbench[@]}" --target etcd --endpoints "$etcd_all" --events "$run_dir/events" \
    >"$run_dir/load.out" 2>"$run_dir/load.err" &
  local load=$! load_start
  load_start=$(now)
  pids+=("$load")
  sleep "$step_after"

  # 1. Add m4 as a learner; etcdctl prints the settings the new member must start with.
  event "member-add"
  local added id initial
  added=$(etcdctl --endpoints="$etcd_all" member add m4 --learner --peer-urls=http://127.0.0.1:42380)
  event "member-add-ok"
  id=$(echo "$added" | awk '/^Member / { print $2; exit }')
  initial=$(echo "$added" | sed -n 's/^ETCD_INITIAL_CLUSTER="\(.*\)"$/\1/p')
  [ -n "$id" ] && [ -n "$initial" ] || { echo "cannot parse member add output: $added" >&2; return 1; }
  log "learner m4 id=$id"

  # 2. Start m4 (its pid file beside the others, so etcd-cluster.sh stop ends it too).
  etcd --name m4 --data-dir "$etcd_cluster/m4.etcd" \
    --listen-client-urls http://127.0.0.1:42379 --advertise-client-urls http://127.0.0.1:42379 \
    --listen-peer-urls http://127.0.0.1:42380 --initial-advertise-peer-urls http://127.0.0.1:42380 \
    --initial-cluster "$initial" --initial-cluster-state existing \
    >"$etcd_cluster/m4.log" 2>&1 &
  echo $! >"$etcd_cluster/m4.pid"
  pids+=("$!")
  event "m4-started"

  # 3. Promote once caught up: etcd refuses to promote a learner that is not in sync.
  local attempts
  if ! attempts=$(retry 60 etcdctl --endpoints="$etcd_all" member promote "$id"); then
    echo "m4 not promoted within 60 s ($attempts attempts)" >&2; return 1
  fi
  event "promote-ok attempts=$attempts"
  log "m4 promoted after $attempts attempt(s)"

  # 4. Find the leader; move leadership to another voter (an original member if possible).
  local all4=$etcd_all,127.0.0.1:42379 table leader_ep leader_id to_id
  table=$(etcdctl --endpoints="$all4" endpoint status -w table)
  # | ENDPOINT | ID | VERSION | DB SIZE | IS LEADER | IS LEARNER | RAFT TERM | ...
  leader_ep=$(echo "$table" | awk -F'|' '$6 ~ /true/ { gsub(/ /, "", $2); print $2; exit }')
  leader_id=$(echo "$table" | awk -F'|' '$6 ~ /true/ { gsub(/ /, "", $3); print $3; exit }')
  to_id=$(echo "$table" | awk -F'|' '$6 ~ /false/ && $7 ~ /false/ { gsub(/ /, "", $3); print $3; exit }')
  [ -n "$leader_id" ] && [ -n "$to_id" ] || { echo "no leader/transferee in:"$'\n'"$table" >&2; return 1; }
  log "leader $leader_ep ($leader_id) -> $to_id"
  event "move-leader $leader_id->$to_id"
  etcdctl --endpoints="$all4" move-leader "$to_id" >&2
  event "move-leader-ok"

  # 5. Remove the old leader and stop its process. With --strict-reconfig-check (on by default)
  # the member that takes the request refuses ("etcdserver: unhealthy cluster") unless enough
  # voters have been connected to it for 5 s (etcd's HealthInterval); m4 has only just joined.
  # An attempt can remove it and still fail ("server stopped": it was sent to the member
  # removed); the next then finds no such member, which is done too.
  event "member-remove $leader_id"
  if ! attempts=$(retry 60 removed_or_gone "member not found" etcdctl --endpoints="$all4" member remove "$leader_id"); then
    echo "$leader_id not removed within 60 s ($attempts attempts)" >&2; return 1
  fi
  event "member-remove-ok attempts=$attempts"
  log "removed $leader_id after $attempts attempt(s)"
  local i name=""
  for i in 0 1 2; do [ "${etcd_clients[$i]}" = "$leader_ep" ] && name=${etcd_names[$i]}; done
  [ -n "$name" ] || name="m4"
  local old_pid
  old_pid=$(cat "$etcd_cluster/$name.pid")
  if kill -0 "$old_pid" 2>/dev/null; then log "$name still running after its removal; stopping it"
  else log "$name exited by itself after its removal"; fi
  stop_pid "$old_pid"
  rm -f "$etcd_cluster/$name.pid"
  event "old-leader-stopped $name"
  log "removed and stopped $name"

  # Status after the change, for the record.
  etcdctl --endpoints="$all4" endpoint status -w table 2>/dev/null >&2 || true

  finish_load "$load" "$run_dir/load.out" "$load_start"
  record etcd "$r" "$(gapbench_fields "$run_dir/load.out" "$run_dir/load.err")"
  cleanup_run
}

# ---------------------------------------------------------------------------------------- keel

keel_all=127.0.0.1:8081,127.0.0.1:8082,127.0.0.1:8083
keel_all4=$keel_all,127.0.0.1:8084

# The id of the node that reports itself leader, from `keel status`, whose rows are
#   ID  ADDRESS  ROLE  MEMBER  TERM  COMMIT  APPLIED  LAG  LEADER
# (an endpoint that does not answer shows `-  ADDRESS  unreachable ...`). Node 4's endpoint is
# asked too, for once it has joined.
keel_leader() {
  # (status fails while a node is down: only its table matters; pipefail is on)
  { "$KEEL" status --endpoints "$keel_all4" 2>/dev/null || true; } | awk '$3 == "leader" { print $1; exit }'
}

# Succeeds once `keel member list` shows node 4 (a row `4  learner  ...`).
keel_node4_listed() {
  "$KEEL" member list --endpoints "$keel_all4" | awk '$1 == "4" { f = 1 } END { exit !f }'
}

# One keel run (run number $2) with load $1 (`bench` = keel bench, `gapbench`); prints the
# load's output, the events and the RESULT line.
run_keel() {
  local loader=$1 r=$2
  run_dir=$(mktemp -d /tmp/gap-keel-XXXXXX)
  local data=$run_dir/dev
  : >"$run_dir/events"
  # --no-restart: the removed node's process must stay dead (keel dev stops a removed node by
  # itself, and would not restart it anyway).
  "$KEEL" dev --data-dir "$data" --no-restart >"$run_dir/dev.log" 2>&1 &
  local dev=$!
  pids+=("$dev")
  local leader="" _
  for _ in $(seq 120); do
    leader=$(keel_leader) || true
    [ -n "$leader" ] && break
    sleep 0.5
  done
  [ -n "$leader" ] || { echo "keel dev elected no leader in 60 s:" >&2; cat "$run_dir/dev.log" >&2; return 1; }
  # keel dev's nodes, so that the clean-up stops them even if keel dev itself needs a SIGKILL.
  local child
  for child in $(pgrep -P "$dev" || true); do stragglers+=("$child"); done

  local load load_series stamper
  if [ "$loader" = bench ]; then
    load_series=keel-bench
    # --warmup 0 (its default is 1 s): the same window as gapbench's, so the steps fall at the
    # same offsets and the first seconds count too.
    # Its progress lines are timed as they arrive, to find when its measurement began: the
    # gap it reports is an offset from then.
    mkfifo "$run_dir/progress"
    stamp <"$run_dir/progress" >"$run_dir/load.err" &
    stamper=$!
    pids+=("$stamper")
    "$KEEL" bench --clients "$clients" --duration "$load_secs" --warmup 0 --endpoints "$keel_all4" \
      >"$run_dir/load.out" 2>"$run_dir/progress" &
  else
    load_series=keel-gapbench
    "${gapbench[@]}" --target keel --endpoints "$keel_all" --events "$run_dir/events" \
      >"$run_dir/load.out" 2>"$run_dir/load.err" &
  fi
  load=$!
  pids+=("$load")
  # `keel bench` does not read the events file: their offsets are printed from here (below),
  # from its own start if its progress lines tell it, else from this one (a little earlier).
  local load_start
  load_start=$(now)
  sleep "$step_after"

  # 1. Node 4 asks to join as a learner by itself.
  event "node4-start"
  "$KEEL" serve --id 4 --cluster keel-dev --data-dir "$data/node4" \
    --peer-addr 127.0.0.1:7084 --client-addr 127.0.0.1:8084 \
    --join "$keel_all" --certs "$data/certs" \
    >"$run_dir/node4.log" 2>&1 &
  local node4=$!
  pids+=("$node4")

  # 2. Wait until it is a member.
  local attempts
  attempts=$(retry 60 keel_node4_listed) ||
    { echo "node 4 not in the member list within 60 s ($attempts attempts)" >&2; return 1; }
  event "node4-listed attempts=$attempts"

  # 3. Promote (retried while node 4 is still catching up: refused with its lag).
  attempts=$(retry 60 "$KEEL" member promote 4 --endpoints "$keel_all4") ||
    { echo "node 4 not promoted within 60 s ($attempts attempts)" >&2; return 1; }
  event "promote-ok attempts=$attempts"
  log "node 4 promoted after $attempts attempt(s)"

  # 4. Remove the leader: it hands leadership over by itself once the change commits. Retried
  # while refused (say, if the promotion's configuration has not committed everywhere yet), and
  # done once node $leader is no member (an attempt whose answer was lost removed it).
  leader=$(keel_leader)
  [ -n "$leader" ] || { echo "no leader after the promotion" >&2; return 1; }
  event "member-remove $leader"
  attempts=$(retry 30 removed_or_gone "is not a member" "$KEEL" member remove "$leader" --endpoints "$keel_all4") ||
    { echo "node $leader not removed within 30 s ($attempts attempts)" >&2; return 1; }
  event "member-remove-ok attempts=$attempts"
  log "removed node $leader (the leader) after $attempts attempt(s)"

  # 5. Stop its process (keel dev stops a removed node too; whichever comes first). A stopped
  # leader hands over again on its way out (`keel serve` on SIGTERM), which also rescues a
  # hand-over that the removal started but lost (its target can drop the removed leader's
  # connection before TimeoutNow arrives, then writes wait for an election timeout): so the
  # figures are those of a removal followed at once by a stop, as for etcd.
  local victim=""
  if [ "$leader" = 4 ]; then victim=$node4; else victim=$(pgrep -P "$dev" -f -- "--id $leader " || true); fi
  if [ -n "$victim" ]; then stop_pid "$victim"; else log "no process found for node $leader (already stopped)"; fi
  event "old-leader-stopped $leader"

  finish_load "$load" "$run_dir/load.out" "$load_start"
  local fields
  if [ "$loader" = bench ]; then
    wait "$stamper" 2>/dev/null || true  # its progress lines: all written
    local bench_start events
    bench_start=$(keel_bench_start "$run_dir/load.err")
    if [ -n "$bench_start" ]; then
      log "keel bench began measuring $(awk -v a="$bench_start" -v b="$load_start" 'BEGIN { printf "%.3f", a - b }') s after it was started"
    else
      log "no progress lines from keel bench: event offsets are from its process start"
    fi
    events=$(print_events "${bench_start:-$load_start}")
    echo "$events"
    fields=$(keel_bench_fields "$run_dir/load.out" "$events")
  else
    fields=$(gapbench_fields "$run_dir/load.out" "$run_dir/load.err")
  fi
  record "$load_series" "$r" "$fields"
  cleanup_run
}

# ----------------------------------------------------------------------------------------- main

# One run of series $1 (etcd, keel-gapbench or keel-bench), run number $2.
run_one() {
  local series=$1 r=$2 rc
  if [ -n "$ran_one" ]; then sleep "$pause"; fi
  ran_one=1
  echo "== $series run $r/$runs"
  # In a subshell of its own, so that a failed run ends there: its EXIT trap stops what the run
  # started (and keeps its directory), and the next run goes ahead. `set -e` holds inside only
  # if the subshell is not tested (in `if` or `||`), hence the status taken this way.
  set +e
  (
    set -e
    trap 'run_exit $?' EXIT
    trap 'exit 130' INT TERM
    case "$series" in
      etcd) run_etcd "$r" ;;
      keel-gapbench) run_keel gapbench "$r" ;;
      keel-bench) run_keel bench "$r" ;;
    esac
  )
  rc=$?
  set -e
  [ "$rc" != 130 ] || exit 130
  if [ "$rc" != 0 ]; then
    echo "$series failed" >>"$results_file"
    echo "== RESULT $series run $r/$runs: FAILED (exit $rc)"
  fi
}

# The EXIT trap of a run (exit status $1): stops what it started; keeps its directory if it
# failed.
run_exit() {
  if [ "$1" != 0 ] && [ -n "$run_dir" ]; then
    log "the run failed; its directory is kept: $run_dir"
    KEEP=1
  fi
  cleanup_run
}

# Every run's figure $2 (gap_ms, ...) of series $1, and their median. A run that gives only an
# upper bound ("<8.5", "<=31.0") counts with that bound, and the median is then an upper bound
# too ("<=").
summary() {
  local values bounded median
  values=$(awk -v s="$1" -v k="$2" '$1 == s { for (i = 2; i <= NF; i++) if (index($i, k "=") == 1) print substr($i, length(k) + 2) }' "$results_file")
  bounded=$(grep -c '^<' <<<"$values" || true)
  median=$(sed 's/^<=*//' <<<"$values" | grep -E '^[0-9.]+$' | median || true)
  [ -n "$median" ] || median=-
  if [ "$bounded" != 0 ] && [ "$median" != - ]; then median="<=$median"; fi
  printf '   %-16s %s; median %s\n' "$2" "$(tr '\n' ' ' <<<"$values")" "$median"
}

series=()
case "$target" in
  etcd) series=(etcd) ;;
  keel) series=(keel-gapbench keel-bench) ;;
  both) series=(etcd keel-gapbench keel-bench) ;;
esac
if [ "$target" != keel ]; then setup_etcd; fi
if [ "$target" != etcd ] && [ ! -x "$KEEL" ]; then
  echo "no keel binary at $KEEL (cargo build --release -p keel-cli)" >&2; exit 1
fi

ran_one=""
for r in $(seq "$runs"); do
  order=("${series[@]}")
  # With both systems, every other round runs keel first.
  if [ "$target" = both ] && [ $((r % 2)) = 0 ]; then order=(keel-gapbench keel-bench etcd); fi
  for s in "${order[@]}"; do run_one "$s" "$r"; done
done

echo "== SUMMARY ($runs runs per series; LOAD_SECS=$load_secs STEP_AFTER=$step_after)"
for s in "${series[@]}"; do
  failed=$(awk -v s="$s" '$1 == s && $2 == "failed"' "$results_file" | wc -l)
  echo "== $s$([ "$failed" = 0 ] || echo " ($failed failed runs, left out)")"
  for k in gap_ms gap_at_s add_gap_ms handover_gap_ms ops_per_s errors stall_ms handover_at_s; do
    summary "$s" "$k"
  done
done
