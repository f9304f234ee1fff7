#!/usr/bin/env python3
"""The measuring half of the soak run (run.sh drives it). Standard library only.

  soak.py sample PID CSV INTERVAL_S
      Appends `elapsed_s,rss_kib,fds` for process PID to CSV every INTERVAL_S seconds (elapsed
      from the sampler's start) until PID is gone or the sampler gets SIGTERM. One process, no
      children, so run.sh can stop it by its PID.

  soak.py report RUN_DIR --seconds S --connections C --uptime U --jwks-ttl T --cooldown K
                 [--alive 0|1]
      Reads RUN_DIR/{wrk.out,before.prom,after.prom,rss.csv,fds.txt,version.json}, prints the
      summary block and exits 1 when a check failed (each failure is named in the block).
"""

import argparse
import json
import math
import os
import re
import signal
import sys
import time

MIB = 1024  # KiB per MiB: RSS is read in KiB

# RSS plateau, part 1: after warm-up (the first WARMUP_FRACTION of the load) RSS may still grow
# by this much, whichever is larger. The absolute part covers allocator behaviour that is not a
# leak: glibc hands out memory per arena and per thread and returns it to the OS lazily, so RSS
# moves in steps of a few MiB as the two tokio workers' buffers and the verified-token cache's
# entries (one per valid token, a few MiB for the soak's 12 000) fill and churn. The relative part
# keeps the bound meaningful should the base RSS be large. A leak of even 100 bytes per
# request at ~10 000 requests/s is ~57 MiB a minute and cannot hide under either.
WARMUP_FRACTION = 0.10
GROWTH_PERCENT = 20
GROWTH_FLOOR_KIB = 16 * MIB

# RSS plateau, part 2: no steady growth in the second half of the load. The mean of the last
# quarter's samples may exceed the third quarter's by at most this much (whichever is larger):
# a slow leak that the end bound above could still absorb shows up here as a step between
# quarters, while a plateau's page-level noise stays well inside 1 MiB.
TREND_PERCENT = 3
TREND_FLOOR_KIB = 1 * MIB

# File descriptors: once the load stops and its connections close, authgate's fds must be back
# near where they were before it. The slack is the demo's own loopback connection between its
# key fetcher and the embedded issuer, which may or may not be pooled at either moment.
FD_SLACK = 4

# Statuses /auth may answer in this soak: allow, invalid-token deny, overload shed.
EXPECTED_STATUSES = {"200", "401", "503"}


def sample(pid: int, csv_path: str, interval: float) -> None:
    stop = False

    def on_term(signum, frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    started = time.monotonic()
    with open(csv_path, "a", encoding="ascii") as out:
        if out.tell() == 0:
            out.write("elapsed_s,rss_kib,fds\n")
        while not stop:
            try:
                rss = read_rss_kib(pid)
                fds = len(os.listdir(f"/proc/{pid}/fd"))
            except (FileNotFoundError, ProcessLookupError):
                return
            out.write(f"{time.monotonic() - started:.2f},{rss},{fds}\n")
            out.flush()
            deadline = time.monotonic() + interval
            while not stop and time.monotonic() < deadline:
                time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))


def read_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise ProcessLookupError(pid)


METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def read_metrics(path: str) -> list:
    """(name, labels, value) for every sample of a Prometheus text file."""
    samples = []
    with open(path, encoding="utf-8") as text:
        for line in text:
            match = METRIC_LINE.match(line.strip())
            if not match:
                continue
            labels = dict(LABEL.findall(match.group(2) or ""))
            samples.append((match.group(1), labels, float(match.group(3))))
    return samples


def total(samples: list, name: str, **labels) -> int:
    return int(
        sum(
            value
            for metric, have, value in samples
            if metric == name and all(have.get(k) == v for k, v in labels.items())
        )
    )


def by_label(samples: list, name: str, key: str, **labels) -> dict:
    out = {}
    for metric, have, value in samples:
        if metric == name and all(have.get(k) == v for k, v in labels.items()):
            out[have.get(key, "")] = out.get(have.get(key, ""), 0) + int(value)
    return out


def read_wrk(path: str) -> dict:
    result = {"sent": {}, "status": {}, "summary": {}, "errors": {}, "latency_us": {}}
    with open(path, encoding="utf-8", errors="replace") as text:
        for line in text:
            parts = line.split()
            if len(parts) == 3 and parts[0].startswith("soak."):
                result[parts[0][5:]][parts[1]] = int(parts[2])
    return result


def mean(values):
    return sum(values) / len(values) if values else float("nan")


def mib(kib) -> str:
    return f"{kib / MIB:.1f} MiB"


def thousands(n) -> str:
    return f"{n:,}".replace(",", " ")


def report(args) -> int:
    run = args.run_dir
    failures = []
    wrk = read_wrk(os.path.join(run, "wrk.out"))
    before = read_metrics(os.path.join(run, "before.prom"))
    after = read_metrics(os.path.join(run, "after.prom"))
    with open(os.path.join(run, "version.json"), encoding="utf-8") as f:
        version = json.load(f)
    lines = []
    say = lines.append

    say(
        f"authgate soak: {args.seconds} s of GET /auth, {args.threads} wrk threads, "
        f"{args.connections} connections, 127.0.0.1, release build "
        f"{version.get('version')} ({version.get('commit')})"
    )

    # --- load and statuses -----------------------------------------------------------------
    requests = wrk["summary"].get("requests", 0)
    duration_s = wrk["summary"].get("duration_us", 0) / 1e6
    rate = requests / duration_s if duration_s else 0.0
    lat = wrk["latency_us"]
    say(
        f"requests       {thousands(requests)} in {duration_s:.1f} s = {thousands(round(rate))}/s; "
        f"latency p50 {lat.get('p50', 0) / 1000:.2f} ms, p99 {lat.get('p99', 0) / 1000:.2f} ms, "
        f"p99.9 {lat.get('p99.9', 0) / 1000:.2f} ms, max {lat.get('max', 0) / 1000:.1f} ms"
    )
    if requests == 0:
        failures.append("no requests were answered")
    statuses = wrk["status"]
    unexpected = {s: n for s, n in statuses.items() if s not in EXPECTED_STATUSES}
    say(
        f"statuses       200: {thousands(statuses.get('200', 0))}, "
        f"401: {thousands(statuses.get('401', 0))}, 503 (shed): {thousands(statuses.get('503', 0))}, "
        f"other: {thousands(sum(unexpected.values()))}"
        + (f" {unexpected}" if unexpected else "")
    )
    if unexpected:
        failures.append(f"unexpected statuses {unexpected}")
    errors = wrk["errors"]
    socket_errors = sum(errors.values())
    say(
        f"socket errors  {socket_errors} (connect {errors.get('connect', 0)}, read "
        f"{errors.get('read', 0)}, write {errors.get('write', 0)}, timeout {errors.get('timeout', 0)})"
    )
    if socket_errors:
        failures.append(f"{socket_errors} socket errors or timeouts")

    # --- what was sent against what authgate decided ----------------------------------------
    # wrk cannot pair a response with its request, so the classes are checked by count: per
    # expected reason, authgate's decision counter may lag what was sent only by the requests
    # still in flight when wrk stopped (at most one per connection) plus any that were shed.
    name = "authgate_decisions_total"
    decided_before = by_label(before, name, "reason", frontend="forward_auth")
    decided_after = by_label(after, name, "reason", frontend="forward_auth")
    decided = {
        r: decided_after.get(r, 0) - decided_before.get(r, 0)
        for r in set(decided_after) | set(decided_before)
    }
    decided = {r: n for r, n in decided.items() if n}
    shed = total(after, "authgate_checks_shed_total") - total(before, "authgate_checks_shed_total")
    sent = wrk["sent"]
    slack = args.connections + shed
    mismatches = []
    for reason in sorted(set(sent) | set(decided)):
        if reason == "overloaded":
            continue
        lag = sent.get(reason, 0) - decided.get(reason, 0)
        if lag < 0 or lag > slack:
            mismatches.append(f"{reason}: sent {sent.get(reason, 0)}, decided {decided.get(reason, 0)}")
    say(
        "by reason      "
        + ", ".join(
            f"{r} {thousands(sent.get(r, 0))}/{thousands(decided.get(r, 0))}"
            for r in sorted(set(sent) | set(decided))
        )
        + f" (sent/decided; lag allowed 0..{slack})"
    )
    allowed = sum(n for r, n in decided.items() if r in ("valid_token", "anonymous"))
    denied_401 = sum(n for r, n in decided.items() if r not in ("valid_token", "anonymous", "overloaded"))
    for status, server in (("200", allowed), ("401", denied_401)):
        got = statuses.get(status, 0)
        if not 0 <= server - got <= args.connections:
            mismatches.append(f"status {status}: answered {got}, authgate decided {server}")
    if mismatches:
        failures.append("sent and decided disagree: " + "; ".join(mismatches))

    # --- RSS and fds ------------------------------------------------------------------------
    samples = []
    with open(os.path.join(run, "rss.csv"), encoding="ascii") as f:
        for line in f.readlines()[1:]:
            t, rss, fds = line.strip().split(",")
            samples.append((float(t), int(rss), int(fds)))
    load = [s for s in samples if s[0] <= args.seconds + 0.5]
    if len(load) < 8:
        failures.append(f"only {len(load)} RSS samples during the load")
        say(f"rss            too few samples ({len(load)})")
    else:
        warm_t = args.seconds * WARMUP_FRACTION
        warm = next(s for s in load if s[0] >= warm_t) if any(s[0] >= warm_t for s in load) else load[0]
        first, last = load[0], load[-1]
        peak = max(s[1] for s in load)
        bound = warm[1] + max(warm[1] * GROWTH_PERCENT // 100, GROWTH_FLOOR_KIB)
        q3 = [s[1] for s in load if args.seconds / 2 <= s[0] < args.seconds * 3 / 4]
        q4 = [s[1] for s in load if s[0] >= args.seconds * 3 / 4]
        trend_bound = mean(q3) + max(mean(q3) * TREND_PERCENT / 100, TREND_FLOOR_KIB)
        say(
            f"rss            at load start {mib(first[1])}, after warm-up ({warm[0]:.0f} s) "
            f"{mib(warm[1])}, max {mib(peak)}, end {mib(last[1])} (bound {mib(bound)}: "
            f"+max({GROWTH_PERCENT} %, {GROWTH_FLOOR_KIB // MIB} MiB))"
        )
        say(
            f"rss trend      mean of 3rd quarter {mib(mean(q3))}, 4th quarter {mib(mean(q4))} "
            f"({(mean(q4) - mean(q3)) / MIB:+.2f} MiB; bound +max({TREND_PERCENT} %, "
            f"{TREND_FLOOR_KIB // MIB} MiB)); {len(load)} samples every {args.interval:g} s"
        )
        say("rss series     " + series(load))
        if last[1] > bound:
            failures.append(f"RSS grew past its bound: {mib(last[1])} > {mib(bound)}")
        if not q3 or not q4 or mean(q4) > trend_bound:
            failures.append(
                f"RSS still rising in the second half: {mib(mean(q3))} -> {mib(mean(q4))}"
            )
        with open(os.path.join(run, "fds.txt"), encoding="ascii") as f:
            fds_before, fds_after = (int(x) for x in f.read().split())
        say(
            f"fds            before load {fds_before}, during {min(s[2] for s in load)}.."
            f"{max(s[2] for s in load)}, after load {fds_after}"
        )
        if fds_after > fds_before + FD_SLACK:
            failures.append(f"file descriptors not released: {fds_before} before, {fds_after} after")

    # --- key fetches ------------------------------------------------------------------------
    fetch = "authgate_jwks_fetches_total"
    fetches_before, fetches_after = total(before, fetch), total(after, fetch)
    failed = {r: n for r, n in by_label(after, fetch, "result").items() if r != "ok"}
    # Since the process started (uptime U): the first fetch; unknown-kid refetches, at most one
    # per cooldown K counted from the refetch (floor(U/K) + 1); scheduled refreshes, the first
    # at 70 % of the TTL T at the earliest and each next one 70 % of T after the previous
    # (floor(U / 0.7T)), each of which an unknown-kid check may join and then follow with a
    # fetch of its own (the same number again).
    scheduled = math.floor(args.uptime / (0.7 * args.jwks_ttl))
    bound = 1 + math.floor(args.uptime / args.cooldown) + 1 + 2 * scheduled
    refetches = total(after, "authgate_key_cache_lookups_total", result="miss_refetch")
    cooldown_denials = total(after, "authgate_key_cache_lookups_total", result="miss_cooldown") - total(
        before, "authgate_key_cache_lookups_total", result="miss_cooldown"
    )
    unknown_kid = math.floor(args.uptime / args.cooldown) + 1
    say(
        f"jwks fetches   {fetches_before} before the load, {fetches_after} at the end; bound "
        f"{bound} for {args.uptime:.0f} s of uptime = 1 first + {unknown_kid} unknown-kid "
        f"(one per {args.cooldown:g} s cooldown) + 2 x {scheduled} scheduled (TTL "
        f"{args.jwks_ttl:g} s, at >= {0.7 * args.jwks_ttl:g} s); failed {sum(failed.values())}; "
        f"unknown-kid refetches {refetches}, denied in cooldown {thousands(cooldown_denials)}"
    )
    if fetches_after > bound:
        failures.append(f"{fetches_after} key fetches, more than the bound {bound}")
    if failed:
        failures.append(f"failed key fetches {failed}")
    say(f"shed           {shed} (authgate_checks_shed_total)")

    if not args.alive:
        failures.append("authgate was not running (or not live) at the end of the load")
    say(f"authgate       {'alive and live at the end' if args.alive else 'NOT running at the end'}")

    for failure in failures:
        say(f"FAIL           {failure}")
    say(f"verdict        {'FAIL' if failures else 'PASS'}")
    width = max(len(line) for line in lines)
    print("=" * min(width, 100))
    print("\n".join(lines))
    print("=" * min(width, 100))
    return 1 if failures else 0


def series(samples: list, points: int = 10) -> str:
    """About `points` samples spread over the load, as `t:MiB`."""
    step = max(1, len(samples) // points)
    chosen = samples[::step]
    if chosen[-1] is not samples[-1]:
        chosen.append(samples[-1])
    return " ".join(f"{t:.0f}s:{rss / MIB:.1f}" for t, rss, _ in chosen)


def main() -> int:
    parser = argparse.ArgumentParser(description="soak sampler and report")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sample")
    s.add_argument("pid", type=int)
    s.add_argument("csv")
    s.add_argument("interval", type=float)
    r = sub.add_parser("report")
    r.add_argument("run_dir")
    r.add_argument("--seconds", type=int, required=True)
    r.add_argument("--threads", type=int, required=True)
    r.add_argument("--connections", type=int, required=True)
    r.add_argument("--interval", type=float, required=True)
    r.add_argument("--uptime", type=float, required=True)
    r.add_argument("--jwks-ttl", type=float, required=True)
    r.add_argument("--cooldown", type=float, required=True)
    r.add_argument("--alive", type=int, default=1)
    args = parser.parse_args()
    if args.command == "sample":
        sample(args.pid, args.csv, args.interval)
        return 0
    return report(args)


if __name__ == "__main__":
    sys.exit(main())
