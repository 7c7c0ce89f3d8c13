#!/usr/bin/env python3
"""gapbench: closed-loop write load that measures the longest gap without a committed write.

Stdlib only (Python 3.11). Each of --clients threads keeps one write in flight on its own
keep-alive http.client.HTTPConnection:

  keel  PUT  /v1/kv/<key>   body: the raw value                        200 = committed
  etcd  POST /v3/kv/put     body: {"key": b64(key), "value": b64(value)}  (etcd 3.4's JSON
                            gRPC gateway)                                200 = committed

Any endpoint will do (keel and etcd followers forward writes to the leader). On a connection
error, a timeout (--timeout, the socket timeout) or a non-200 answer the client counts an
error, moves to the next endpoint of the list (round robin) and retries after 10 ms.

At the end it prints one line

  target=.. clients=.. secs=.. ops=.. ops_per_s=.. errors=.. longest_gap_ms=.. gap_start_s=..

where longest_gap_ms is the longest interval between consecutive successful completions,
counting the start of the run to the first and the last to the end, and gap_start_s its start
(seconds from the start of the run). Then, if --events FILE is given, one line per event of
FILE (lines `<unix_time_float> <label>`, written by whoever changes the cluster meanwhile):
`event t=<seconds from start> <label>`. On stderr: the five longest gaps, the longest time one
client went without a committed write, committed writes per second, and the errors by kind
(count, first and last time, first answer).

Example:
  python3 scripts/gapbench.py --target etcd \\
      --endpoints 127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379 --duration 20
"""

from __future__ import annotations

import argparse
import base64
import http.client
import random
import sys
import threading
import time

RETRY_PAUSE = 0.010


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", choices=["keel", "etcd"], required=True)
    p.add_argument("--endpoints", required=True, help="host:port,... (client endpoints)")
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--duration", type=float, default=20.0, help="seconds")
    p.add_argument("--value-size", type=int, default=256)
    p.add_argument("--key-space", type=int, default=10000)
    p.add_argument("--timeout", type=float, default=5.0, help="socket timeout, seconds")
    p.add_argument("--events", help="file of `<unix_time> <label>` lines to report offsets of")
    a = p.parse_args(argv)
    eps = []
    for ep in a.endpoints.split(","):
        ep = ep.strip()
        for prefix in ("http://", "https://"):
            if ep.startswith(prefix):
                ep = ep[len(prefix):]
        ep = ep.rstrip("/")
        if not ep:
            continue
        host, sep, port = ep.rpartition(":")
        if not sep or not port.isdigit():
            p.error(f"endpoint {ep!r} is not host:port")
        eps.append((host.strip("[]"), int(port)))
    if not eps:
        p.error("no endpoints")
    if a.clients < 1 or a.duration <= 0 or a.key_space < 1 or a.value_size < 0 or a.timeout <= 0:
        p.error("--clients, --duration, --key-space, --timeout must be positive")
    a.endpoint_list = eps
    return a


class Client(threading.Thread):
    def __init__(self, n: int, args: argparse.Namespace, go: threading.Event, stop: threading.Event):
        super().__init__(name=f"client-{n}", daemon=True)
        self.args = args
        self.go = go
        self.stop = stop
        self.eps = args.endpoint_list
        self.ep = n % len(self.eps)  # spread the clients over the endpoints
        self.conn: http.client.HTTPConnection | None = None
        self.done: list[float] = []  # monotonic completion times of committed writes
        self.errors = 0
        # kind -> [count, first time, last time, first answer body]
        self.error_kinds: dict[str, list] = {}
        self.rng = random.Random(n * 7919 + 1)
        value = bytes(self.rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(args.value_size))
        self.value = value
        self.value_b64 = base64.b64encode(value).decode()
        self.width = len(str(args.key_space - 1))

    def _close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
            self.conn = None

    def _request(self, key: str) -> int:
        if self.conn is None:
            host, port = self.eps[self.ep]
            self.conn = http.client.HTTPConnection(host, port, timeout=self.args.timeout)
        if self.args.target == "keel":
            self.conn.request("PUT", "/v1/kv/" + key, body=self.value,
                              headers={"Content-Type": "application/octet-stream"})
        else:
            k = base64.b64encode(key.encode()).decode()
            body = ('{"key":"%s","value":"%s"}' % (k, self.value_b64)).encode()
            self.conn.request("POST", "/v3/kv/put", body=body,
                              headers={"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        body = resp.read()  # drain, so the connection can be reused
        if resp.will_close:
            self._close()
        return resp.status, body

    def run(self) -> None:
        self.go.wait()
        while not self.stop.is_set():
            key = "k%0*d" % (self.width, self.rng.randrange(self.args.key_space))
            body = b""
            try:
                status, body = self._request(key)
                kind = None if status == 200 else f"http-{status}"
            except (OSError, http.client.HTTPException) as e:
                kind = type(e).__name__
            except Exception as e:  # never let a thread die silently
                kind = "unexpected-" + type(e).__name__
            now = time.monotonic()
            if kind is None:
                self.done.append(now)
                continue
            self.errors += 1
            k = self.error_kinds.get(kind)
            if k is None:
                self.error_kinds[kind] = [1, now, now, body[:160].decode("utf-8", "replace")]
            else:
                k[0] += 1
                k[2] = now
            self._close()
            self.ep = (self.ep + 1) % len(self.eps)
            time.sleep(RETRY_PAUSE)


def read_events(path: str) -> list[tuple[float, str]]:
    events = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.strip().split(None, 1)
                if not parts:
                    continue
                try:
                    t = float(parts[0])
                except ValueError:
                    continue
                events.append((t, parts[1] if len(parts) > 1 else ""))
    except FileNotFoundError:
        pass
    return events


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    go, stop = threading.Event(), threading.Event()
    clients = [Client(n, args, go, stop) for n in range(args.clients)]
    for c in clients:
        c.start()
    wall0 = time.time()
    t0 = time.monotonic()
    go.set()
    end = t0 + args.duration
    while True:
        left = end - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(left, 0.5))
    stop.set()
    # Daemon threads: in-flight requests are abandoned (each is bounded by --timeout anyway).
    # Only completions within [t0, end] count; copy the lists, threads may still append.
    times = sorted(t for c in clients for t in list(c.done) if t <= end)
    errors = sum(c.errors for c in clients)
    kinds: dict[str, list] = {}
    for c in clients:
        for kind, (n, first, last, body) in list(c.error_kinds.items()):
            k = kinds.setdefault(kind, [0, first, last, body])
            k[0] += n
            if first < k[1]:
                k[1], k[3] = first, body
            k[2] = max(k[2], last)

    points = [t0] + times + [end]
    gaps = sorted(((points[i + 1] - points[i], points[i]) for i in range(len(points) - 1)),
                  reverse=True)
    longest, gap_start = gaps[0]
    secs = args.duration
    print(f"target={args.target} clients={args.clients} secs={secs:g} ops={len(times)} "
          f"ops_per_s={len(times) / secs:.0f} errors={errors} "
          f"longest_gap_ms={longest * 1000:.1f} gap_start_s={gap_start - t0:.3f}")
    top = " ".join(f"{g * 1000:.1f}ms@{s - t0:.3f}s" for g, s in gaps[:5])
    print(f"gapbench: top gaps {top}", file=sys.stderr)
    # A cluster can keep committing for a few clients while most wait: the longest time one
    # client went without a committed write, and the committed writes in each second, show it.
    stall, stall_start = 0.0, t0
    for c in clients:
        mine = [t0] + [t for t in list(c.done) if t <= end] + [end]
        for i in range(len(mine) - 1):
            if mine[i + 1] - mine[i] > stall:
                stall, stall_start = mine[i + 1] - mine[i], mine[i]
    print(f"gapbench: longest one-client stall {stall * 1000:.1f}ms from {stall_start - t0:.3f}s",
          file=sys.stderr)
    per_sec = [0] * max(1, int(secs + 0.999))
    for t in times:
        per_sec[min(int(t - t0), len(per_sec) - 1)] += 1
    print(f"gapbench: ops per second {' '.join(map(str, per_sec))}", file=sys.stderr)
    for kind, (n, first, last, body) in sorted(kinds.items(), key=lambda kv: kv[1][1]):
        print(f"gapbench: error {kind} x{n} from {first - t0:.3f}s to {last - t0:.3f}s"
              f"{' first answer: ' + body.strip() if body.strip() else ''}", file=sys.stderr)
    if args.events:
        for t, label in sorted(read_events(args.events)):
            print(f"event t={t - wall0:.3f} {label}")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
