#!/usr/bin/env python3
"""Load bench: direct to a mock upstream vs a bare pingora passthrough vs sluice, in one run.

Starts the mock upstream (bench/mock.rs), the bare passthrough (bench/passthrough.rs) and
sluice (release builds), drives each with wrk at concurrency 1 and 32 with a 2 KB chat body,
with API-key authentication and credential injection on, and prints requests/s, p50/p99 latency, and the ratios that matter: sluice vs direct and vs
the bare passthrough, and the p99 sluice adds over the passthrough. Machines here are noisy:
compare only figures from the same run.

Usage: python3 bench/load.py [--duration SECONDS]   (needs `wrk`: apt-get install wrk)
       python3 bench/load.py --ttft [--requests N]   time to first byte / first token of
       streamed answers, sluice with response redaction off and on
       python3 bench/load.py --limits   what rate limits cost: a key without limits vs one with
       rpm and tpm counted in the process vs the same counted in Redis ([fleet] redis_url; needs
       redis-server), in one run
       python3 bench/load.py --against OLD_BINARY   an A/B of a change: a second sluice (e.g.
       the build from before it, copied aside) on a copy of the same store, driven in the same
       run, with the ratio new/old
       --old-page-size 4096   with --against: the second sluice's store rebuilt with 4 KB pages
       --log-level info   sluice's log level (default warn; info adds a line per request)
       --rounds N   measure each target N times, alternating the order, and report means
       --conns 32   only these concurrency levels (comma-separated; default 1,32)
       --sluice BINARY   drive another sluice build (e.g. target/profiling/sluice under perf)
       python3 bench/load.py --ladder [--rounds N]   the ablation ladder: sluice switched on
       stage by stage (authentication only; + limits; + audit record; + log line and metrics;
       + usage tracking; + redaction), beside the bare passthrough and a buffering variant of
       it, with CPU per request per stage. Needs a bench build:
       cargo build --release --locked --features bench-ablation --bin sluice --examples
       python3 bench/load.py --ladder --instructions [--duration S]   the same stages, each
       alone under valgrind's callgrind at 2 connections: user-space instructions per request
       (every thread of the process: the audit writer's too). Unlike CPU time these do not
       depend on what else the machine does, so a change's effect on one stage shows exactly.
       Caveat: valgrind has no SHA extensions, so SHA-256 counts as its software fallback
       (about 5x what it costs on a CPU with them), and a `rep movsb` copy counts per byte.
       python3 bench/load.py --ladder --syscalls [--duration S]   the same stages, each alone
       with strace attached to every thread after a warm-up, 2 connections: system calls per
       request, by name (the kernel's share of the CPU, which callgrind does not see).
Every row also shows the target process's CPU time per request (user+system, from
/proc/PID/stat; for `direct` the mock's): on a machine this noisy it is steadier than req/s.
"""
import argparse
import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REL = os.path.join(ROOT, "target", "release")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, deadline=20.0):
    end = time.time() + deadline
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"port {port} never opened")


def to_us(v):
    m = re.match(r"([\d.]+)(us|ms|s)", v)
    n, unit = float(m.group(1)), m.group(2)
    return n * {"us": 1, "ms": 1000, "s": 1_000_000}[unit]


def cpu_ticks(pid):
    """User and system CPU time of a process so far, in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


TICK_US = 1_000_000 / os.sysconf("SC_CLK_TCK")


def wrk(url, conns, duration, lua, pid=None):
    """wrk's figures; with `pid`, also that process's CPU per request (user and system µs)."""
    threads = 1 if conns == 1 else 2
    before = cpu_ticks(pid) if pid else None
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--latency", "-s", lua, url],
        capture_output=True, text=True, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = to_us(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = to_us(re.search(r"\s99%\s+(\S+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res = {"rps": rps, "p50_us": p50, "p99_us": p99, "non2xx": int(errors.group(1)) if errors else 0,
           "n": int(re.search(r"(\d+) requests in", out).group(1))}
    if pid:
        after = cpu_ticks(pid)
        n = max(res["n"], 1)
        res["user_us"] = (after[0] - before[0]) * TICK_US / n
        res["sys_us"] = (after[1] - before[1]) * TICK_US / n
    return res


def first_token(port, key, n):
    """Median and p90 (µs) over n sequential streamed requests: time to the first response byte
    and to the first non-empty delta.content."""
    body = json.dumps({"model": "gpt-4o-mini", "stream": True,
                       "messages": [{"role": "user", "content": "hi"}]},
                      separators=(",", ":")).encode()
    req = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    ttfb, ttft = [], []
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for _ in range(n):
        t0 = time.perf_counter()
        s.sendall(req)
        buf, got_byte, got_token = b"", None, None
        # Every target answers chunked: the response ends with the zero-length chunk.
        while not buf.endswith(b"0\r\n\r\n"):
            chunk = s.recv(65536)
            if not chunk:
                raise SystemExit("connection closed mid-stream")
            now = time.perf_counter()
            if got_byte is None:
                got_byte = now
            buf += chunk
            if got_token is None and re.search(rb'"content":"[^"]', buf):
                got_token = now
        ttfb.append((got_byte - t0) * 1e6)
        ttft.append((got_token - t0) * 1e6)
    s.close()
    q = lambda xs, p: sorted(xs)[int(p * (len(xs) - 1))]
    return {"ttfb_p50": q(ttfb, 0.5), "ttfb_p90": q(ttfb, 0.9),
            "ttft_p50": q(ttft, 0.5), "ttft_p90": q(ttft, 0.9)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--ttft", action="store_true",
                    help="measure time to first byte and first token of streamed answers "
                         "(response redaction off and on) instead of throughput")
    ap.add_argument("--requests", type=int, default=300, help="streamed requests per target (--ttft)")
    ap.add_argument("--limits", action="store_true",
                    help="no limits vs local rpm+tpm vs the same shared through Redis")
    ap.add_argument("--against", metavar="BINARY",
                    help="also run this sluice binary (e.g. the build before a change) and "
                         "print new/old ratios from the same run")
    ap.add_argument("--old-page-size", type=int, metavar="BYTES",
                    help="with --against: rebuild the second sluice's copy of the store with "
                         "these SQLite pages (e.g. 4096, the page size of stores created before "
                         "16 KB pages; --against target/release/sluice then A/Bs the page size alone)")
    ap.add_argument("--log-level", default="warn", help="sluice's [log] level (default warn)")
    ap.add_argument("--conns", default="1,32", help="concurrency levels (default 1,32)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="measure every target this many times, alternating the order")
    ap.add_argument("--ladder", action="store_true",
                    help="the ablation ladder (needs --features bench-ablation): CPU per "
                         "request of each stage sluice adds, beside the bare passthrough")
    ap.add_argument("--instructions", action="store_true",
                    help="with --ladder: instructions per request of each target under "
                         "callgrind (needs valgrind), one target at a time, instead of load")
    ap.add_argument("--syscalls", action="store_true",
                    help="with --ladder: system calls per request of each target under strace, "
                         "one target at a time, instead of load")
    ap.add_argument("--sluice", metavar="BINARY", default=os.path.join(REL, "sluice"),
                    help="the sluice binary to drive (default target/release/sluice; e.g. "
                         "target/profiling/sluice under perf)")
    args = ap.parse_args()
    for b in ("sluice", os.path.join("examples", "mock"), os.path.join("examples", "passthrough")):
        if not os.path.exists(os.path.join(REL, b)):
            raise SystemExit("build first: cargo build --release --locked --bin sluice --examples")
    if args.ladder:
        # Without the feature every stage is the whole of sluice: refuse rather than print a
        # ladder of equal rungs.
        with open(args.sluice, "rb") as f:
            if b"SLUICE_BENCH_SKIP" not in f.read():
                raise SystemExit("--ladder needs a bench build: cargo build --release --locked "
                                 "--features bench-ablation --bin sluice --examples")

    tmp = tempfile.mkdtemp()
    up, bare, prox, adm, met = (free_port() for _ in range(5))
    # A 2 KB chat body of ordinary prose with numbers (years, prices, versions) and no PII:
    # the org has PII redaction on (the default), so this measures the scan a typical request
    # pays.
    prose = ("The quarterly report for 2024 shows revenue of $1,234.56 million, up 12.5% from Q3. "
             "Please summarize the main risks in three bullet points, under 200 words. ")
    body = json.dumps({"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": (prose * 20)[:1900]}]})
    cfg = os.path.join(tmp, "sluice.toml")
    with open(cfg, "w") as f:
        f.write(f'[listen]\nproxy = "127.0.0.1:{prox}"\nadmin = "127.0.0.1:{adm}"\n'
                f'metrics = "127.0.0.1:{met}"\n[store]\npath = "{tmp}/sluice.db"\n'
                f'[log]\nlevel = "{args.log_level}"\n'
                f'[[upstreams]]\nname = "mock"\nregion = "us"\nbase_url = "http://127.0.0.1:{up}"\n'
                f'credential = "mock"\n')
    # sluice with authentication and credential injection on: one org, one key, one credential.
    env = dict(os.environ, SLUICE_SECRETS_KEY=base64.b64encode(os.urandom(32)).decode())
    sl = args.sluice
    levels = [int(c) for c in args.conns.split(",")]

    def cli(*a, stdin=b""):
        return json.loads(subprocess.run([sl, *a, "--config", cfg, "--json"], input=stdin,
                                         capture_output=True, check=True, env=env).stdout)
    org = cli("orgs", "create", "bench")["id"]
    key = cli("keys", "create", "--org", org)["key"]
    redacting_key = cli("keys", "create", "--org", org, "--name", "responses",
                        "--response-redaction", "on")["key"]
    cli("credentials", "set", "mock", stdin=b"sk-bench-upstream-credential-0123456789")
    # Limits high enough never to refuse: what is measured is the counting.
    limited_key = cli("keys", "create", "--org", org, "--name", "limited", "--rpm", "100000000",
                      "--tpm", "4000000000")["key"]
    # A limit below 100 is counted in Redis request by request (refusals included): what
    # trips redis_timeout_ms if anything does.
    small_key = cli("keys", "create", "--org", org, "--name", "small", "--rpm", "50")["key"]

    if args.ladder and args.instructions:
        return instructions(args, tmp, cfg, cli, env, body, up, bare)
    if args.ladder and args.syscalls:
        return syscalls(args, tmp, cfg, cli, env, body, up, bare)
    if args.ladder:
        return ladder(args, tmp, cfg, cli, env, body, up, bare, levels)

    def lua_for(k, name):
        path = os.path.join(tmp, f"{name}.lua")
        with open(path, "w") as f:
            f.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n')
            f.write(f'wrk.headers["Authorization"] = "Bearer {k}"\n')
            f.write(f"wrk.body = {json.dumps(body)}\n")
        return path
    lua = lua_for(key, "post")

    procs = [
        subprocess.Popen([os.path.join(REL, "examples", "mock"), str(up)]),
        subprocess.Popen([os.path.join(REL, "examples", "passthrough"), str(bare), str(up)],
                         stderr=subprocess.DEVNULL),
        subprocess.Popen([sl, "serve", "--config", cfg], env=env,
                         stderr=open(os.path.join(tmp, "sluice.log"), "w")),
    ]
    old = None
    if args.against:
        # The same store copied (its own audit writer), other ports, the other binary.
        old, oadm, omet = (free_port() for _ in range(3))
        shutil.copyfile(os.path.join(tmp, "sluice.db"), os.path.join(tmp, "old.db"))
        if args.old_page_size:
            # The copy rebuilt with other pages (an A/B of the store's page size).
            import sqlite3
            c = sqlite3.connect(os.path.join(tmp, "old.db"), isolation_level=None)
            c.execute("PRAGMA journal_mode=DELETE")
            c.execute(f"PRAGMA page_size={args.old_page_size}")
            c.execute("VACUUM")
            c.execute("PRAGMA journal_mode=WAL")
            c.close()
        ocfg = os.path.join(tmp, "old.toml")
        with open(cfg) as src, open(ocfg, "w") as f:
            text = src.read()
            for a, b in ((prox, old), (adm, oadm), (met, omet)):
                text = text.replace(f"127.0.0.1:{a}", f"127.0.0.1:{b}")
            f.write(text.replace(f"{tmp}/sluice.db", f"{tmp}/old.db"))
        procs.append(subprocess.Popen([args.against, "serve", "--config", ocfg], env=env,
                                      stderr=open(os.path.join(tmp, "old.log"), "w")))
    try:
        for p in (up, bare, prox) + ((old,) if old else ()):
            wait_port(p)
        if args.limits:
            # A second sluice with a copy of the store (its own audit writer), its limits
            # counted in Redis.
            rport, fprox, fadm, fmet = (free_port() for _ in range(4))
            procs.append(subprocess.Popen(
                ["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no"], stdout=subprocess.DEVNULL))
            wait_port(rport)
            shutil.copyfile(os.path.join(tmp, "sluice.db"), os.path.join(tmp, "fleet.db"))
            fcfg = os.path.join(tmp, "fleet.toml")
            with open(cfg) as src, open(fcfg, "w") as f:
                text = src.read()
                text = text.replace(f"127.0.0.1:{prox}", f"127.0.0.1:{fprox}")
                text = text.replace(f"127.0.0.1:{adm}", f"127.0.0.1:{fadm}")
                text = text.replace(f"127.0.0.1:{met}", f"127.0.0.1:{fmet}")
                text = text.replace(f"{tmp}/sluice.db", f"{tmp}/fleet.db")
                f.write(text + f'[fleet]\nredis_url = "redis://127.0.0.1:{rport}"\n')
            procs.append(subprocess.Popen([sl, "serve", "--config", fcfg], env=env,
                                          stderr=open(os.path.join(tmp, "fleet.log"), "w")))
            wait_port(fprox)
            limited = lua_for(limited_key, "limited")
            runs = {"no limits": (prox, lua), "rpm+tpm, in process": (prox, limited),
                    "rpm+tpm, in Redis": (fprox, limited),
                    "rpm 50, per request": (fprox, lua_for(small_key, "small"))}
            res = {}
            for conns in (1, 32):
                for name, (port, script) in runs.items():
                    url = f"http://127.0.0.1:{port}/v1/chat/completions"
                    wrk(url, conns, 2, script)  # warm-up
                    res[(name, conns)] = wrk(url, conns, args.duration, script)
            print(f"{'sluice key':<22} {'conns':>5} {'req/s':>10} {'p50 us':>9} {'p99 us':>9} {'non-2xx':>8}")
            for (name, conns), r in res.items():
                print(f"{name:<22} {conns:>5} {r['rps']:>10.0f} {r['p50_us']:>9.0f} "
                      f"{r['p99_us']:>9.0f} {r['non2xx']:>8}")
            print()
            # Whether redis_timeout_ms tripped under this load (the host busy with the bench):
            # each outage is one "redis unreachable" line in the fleet sidecar's log.
            with open(os.path.join(tmp, "fleet.log")) as f:
                trips = f.read().count("redis unreachable")
            print(f"Redis marked unreachable during the runs: {trips} time(s) "
                  f"(redis_timeout_ms as configured)")
            for conns in (1, 32):
                base = res[("no limits", conns)]
                for name in ("rpm+tpm, in process", "rpm+tpm, in Redis"):
                    r = res[(name, conns)]
                    print(f"c={conns}: {name} / no limits: throughput {r['rps'] / base['rps']:.2f}x, "
                          f"p50 {r['p50_us'] - base['p50_us']:+.0f} us, p99 {r['p99_us'] - base['p99_us']:+.0f} us")
            return
        if args.ttft:
            runs = [("direct", up, key), ("passthrough", bare, key),
                    ("sluice, response redaction off", prox, key),
                    ("sluice, response redaction on", prox, redacting_key)]
            for name, port, k in runs:
                try:
                    first_token(port, k, 20)  # warm-up
                except (OSError, SystemExit) as e:
                    raise SystemExit(f"{name}: {e}")
            res = {name: first_token(port, k, args.requests) for name, port, k in runs}
            print(f"{'target':<32} {'TTFB p50':>9} {'p90':>7} {'TTFT p50':>9} {'p90':>7}  (us)")
            for name, r in res.items():
                print(f"{name:<32} {r['ttfb_p50']:>9.0f} {r['ttfb_p90']:>7.0f} "
                      f"{r['ttft_p50']:>9.0f} {r['ttft_p90']:>7.0f}")
            off, on = res["sluice, response redaction off"], res["sluice, response redaction on"]
            b = res["passthrough"]
            print(f"\nresponse redaction on/off: TTFB p50 {on['ttfb_p50'] / off['ttfb_p50']:.2f}x "
                  f"({on['ttfb_p50'] - off['ttfb_p50']:+.0f} us), TTFT p50 "
                  f"{on['ttft_p50'] / off['ttft_p50']:.2f}x ({on['ttft_p50'] - off['ttft_p50']:+.0f} us); "
                  f"sluice (off) vs passthrough TTFT p50 {off['ttft_p50'] - b['ttft_p50']:+.0f} us")
            return
        path = "/v1/chat/completions"
        # Each target with the process whose CPU per request is measured (direct: the mock).
        targets = {"direct": (up, procs[0].pid), "passthrough": (bare, procs[1].pid),
                   "sluice": (prox, procs[2].pid)}
        if old:
            targets["sluice (old)"] = (old, procs[3].pid)
        # Several rounds, every other one in reverse order (a target measured later in a
        # round runs on a grown audit log and a warmer machine): each figure is the mean over
        # the rounds.
        runs = {}
        for rnd in range(args.rounds):
            for conns in levels:
                order = list(targets.items())
                for name, (port, pid) in (order if rnd % 2 == 0 else order[::-1]):
                    url = f"http://127.0.0.1:{port}{path}"
                    wrk(url, conns, 2, lua)  # warm-up
                    runs.setdefault((name, conns), []).append(
                        wrk(url, conns, args.duration, lua, pid))
        res = {k: {f: sum(r[f] for r in v) / len(v) for f in v[0]} for k, v in runs.items()}
        if args.rounds > 1:
            print(f"means over {args.rounds} rounds (order reversed every other round)")
        print(f"{'target':<13} {'conns':>5} {'req/s':>10} {'p50 us':>9} {'p99 us':>9} {'non-2xx':>8}"
              f" {'CPU us/req (user+sys)':>22}")
        for (name, conns), r in res.items():
            print(f"{name:<13} {conns:>5} {r['rps']:>10.0f} {r['p50_us']:>9.0f} {r['p99_us']:>9.0f} {r['non2xx']:>8}"
                  f" {r['user_us'] + r['sys_us']:>10.1f} ({r['user_us']:.1f}+{r['sys_us']:.1f})")
        print()
        for conns in levels:
            s, b, d = res[("sluice", conns)], res[("passthrough", conns)], res[("direct", conns)]
            print(f"c={conns}: sluice/direct throughput {s['rps'] / d['rps']:.2f}x, "
                  f"sluice/passthrough throughput {s['rps'] / b['rps']:.2f}x, "
                  f"CPU per request {s['user_us'] + s['sys_us']:.1f} us vs passthrough's "
                  f"{b['user_us'] + b['sys_us']:.1f} us, "
                  f"p99 added vs passthrough {s['p99_us'] - b['p99_us']:+.0f} us, "
                  f"vs direct {s['p99_us'] - d['p99_us']:+.0f} us")
            if old:
                o = res[("sluice (old)", conns)]
                print(f"c={conns}: new/old throughput {s['rps'] / o['rps']:.2f}x, CPU per request "
                      f"{(s['user_us'] + s['sys_us']) / (o['user_us'] + o['sys_us']):.2f}x, old/passthrough "
                      f"{o['rps'] / b['rps']:.2f}x, p50 {s['p50_us'] - o['p50_us']:+.0f} us, "
                      f"p99 {s['p99_us'] - o['p99_us']:+.0f} us")
        bad = sum(r["non2xx"] for r in res.values())
        if bad:
            print(f"WARNING: {bad} non-2xx responses", file=sys.stderr)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()


# The ablation ladder's stages: name, what SLUICE_BENCH_SKIP turns off, which key.
LADDER = [
    ("auth only", "audit,log,usage", "plain"),
    ("+ limits (rpm, tpm)", "audit,log,usage", "limited"),
    ("+ audit record", "log,usage", "limited"),
    ("+ log line, metrics", "usage", "limited"),
    ("+ usage tracking", "", "limited"),
    ("+ redaction (PII, secrets)", "", "redacting"),
]


def stage_config(tmp, cfg, i):
    """A config for stage `i`: its own ports and its own copy of the store (its own audit
    writer). Returns its path and its proxy port."""
    with open(cfg) as f:
        text = f.read()
    prox, adm, met = (free_port() for _ in range(3))
    db = os.path.join(tmp, f"stage{i}.db")
    shutil.copyfile(os.path.join(tmp, "sluice.db"), db)
    scfg = os.path.join(tmp, f"stage{i}.toml")
    with open(scfg, "w") as f:
        t = re.sub(r'proxy = "127.0.0.1:\d+"', f'proxy = "127.0.0.1:{prox}"', text)
        t = re.sub(r'admin = "127.0.0.1:\d+"', f'admin = "127.0.0.1:{adm}"', t)
        t = re.sub(r'metrics = "127.0.0.1:\d+"', f'metrics = "127.0.0.1:{met}"', t)
        f.write(t.replace(f"{tmp}/sluice.db", db))
    return scfg, prox


def ladder_keys(cli, tmp, body):
    """The ladder's keys (in orgs with redaction off and on) and a wrk script for each."""
    plain = cli("orgs", "create", "plain", "--pii", "off", "--secrets", "off")["id"]
    redacting = cli("orgs", "create", "redacting", "--pii", "on", "--secrets", "on")["id"]
    limits = ("--rpm", "100000000", "--tpm", "4000000000")
    keys = {"plain": cli("keys", "create", "--org", plain)["key"],
            "limited": cli("keys", "create", "--org", plain, "--name", "limited", *limits)["key"],
            "redacting": cli("keys", "create", "--org", redacting, *limits)["key"]}
    cli("credentials", "set", "mock", stdin=b"sk-bench-upstream-credential-0123456789")
    scripts = {}
    for name, k in list(keys.items()) + [("none", keys["plain"])]:
        path = os.path.join(tmp, f"{name}.lua")
        with open(path, "w") as f:
            f.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n')
            f.write(f'wrk.headers["Authorization"] = "Bearer {k}"\n')
            f.write(f"wrk.body = {json.dumps(body)}\n")
        scripts[name] = path
    return scripts


def alone_targets(args, tmp, cfg, up, bare):
    """The ladder's targets, to run one at a time: (name, command, port, SLUICE_BENCH_SKIP,
    key)."""
    buffered = free_port()
    targets = [("passthrough", [os.path.join(REL, "examples", "passthrough"), str(bare), str(up)],
                bare, None, "none"),
               ("passthrough, buffering", [os.path.join(REL, "examples", "passthrough"),
                                           str(buffered), str(up), "buffer"], buffered, None,
                "none")]
    for i, (name, skip, key) in enumerate(LADDER):
        scfg, prox = stage_config(tmp, cfg, i)
        targets.append((f"sluice: {name}", [args.sluice, "serve", "--config", scfg], prox,
                        skip, key))
    return targets


def each_alone(args, tmp, cfg, cli, env, body, up, bare, prefix, measure, deadline=20):
    """Each ladder target alone beside the mock: started (under the command `prefix(i)`),
    warmed up at 2 connections, measured by `measure(i, name, pid, url, script)`, killed (no
    graceful shutdown to wait out). Its results by target name."""
    scripts = ladder_keys(cli, tmp, body)
    mock = subprocess.Popen([os.path.join(REL, "examples", "mock"), str(up)])
    res = {}
    try:
        wait_port(up)
        for i, (name, cmd, tport, skip, key) in enumerate(alone_targets(args, tmp, cfg, up, bare)):
            p = subprocess.Popen([*prefix(i), *cmd],
                                 env=env if skip is None else dict(env, SLUICE_BENCH_SKIP=skip),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_port(tport, deadline=deadline)
                url = f"http://127.0.0.1:{tport}/v1/chat/completions"
                wrk(url, 2, 3, scripts[key])  # warm-up: pools, caches, the first batch
                res[name] = measure(i, name, p.pid, url, scripts[key])
            finally:
                p.kill()
                p.wait(timeout=60)
    finally:
        mock.terminate()
        mock.wait(timeout=15)
    return res


def syscalls(args, tmp, cfg, cli, env, body, up, bare):
    """The ladder in system calls: each target alone, strace attached to every thread after a
    warm-up, a wrk run at 2 connections, then the calls of each kind divided by the requests
    served."""
    if not shutil.which("strace"):
        raise SystemExit("--syscalls needs strace (apt-get install strace)")

    def measure(i, name, pid, url, script):
        out = os.path.join(tmp, f"strace.{i}")
        tids = sorted(os.listdir(f"/proc/{pid}/task"))
        st = subprocess.Popen(["strace", "-f", "-c", "-o", out,
                               *[a for t in tids for a in ("-p", t)]],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def traced(t):
            # A thread that has gone counts as attached: there is nothing to wait for.
            try:
                with open(f"/proc/{pid}/task/{t}/status") as f:
                    return re.search(r"^TracerPid:\s+(\d+)", f.read(), re.M).group(1) != "0"
            except OSError:
                return True
        deadline = time.time() + 20
        while not all(traced(t) for t in tids):
            if time.time() > deadline or st.poll() is not None:
                raise SystemExit(f"strace could not attach to {name}")
            time.sleep(0.05)
        r = wrk(url, 2, args.duration, script)
        st.send_signal(2)
        st.wait(timeout=60)
        calls = {}
        with open(out) as f:
            for line in f:
                m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$", line)
                if m and m.group(2) != "total":
                    calls[m.group(2)] = int(m.group(1))
        return ({k: v / max(r["n"], 1) for k, v in calls.items()}, r["non2xx"])

    res = each_alone(args, tmp, cfg, cli, env, body, up, bare, lambda i: [], measure)
    kinds = sorted({k for c, _ in res.values() for k in c},
                   key=lambda k: -max(c.get(k, 0) for c, _ in res.values()))
    shown = [k for k in kinds if max(c.get(k, 0) for c, _ in res.values()) >= 0.05]
    print("system calls per request under strace (every thread of the process), 2 connections")
    print(f"{'target':<38} {'all':>6} " + " ".join(f"{k[:10]:>10}" for k in shown))
    for name, (c, bad) in res.items():
        print(f"{name:<38} {sum(c.values()):>6.2f} "
              + " ".join(f"{c.get(k, 0):>10.2f}" for k in shown)
              + (f"  non-2xx {bad}" if bad else ""))


def instructions(args, tmp, cfg, cli, env, body, up, bare):
    """The ladder in instructions: each target alone under callgrind (counters zeroed after a
    warm-up, dumped after a wrk run at 2 connections), total user-space instructions of the
    process divided by the requests served."""
    if not shutil.which("valgrind"):
        raise SystemExit("--instructions needs valgrind (apt-get install valgrind)")

    def out(i):
        return os.path.join(tmp, f"callgrind.{i}")

    def measure(i, name, pid, url, script):
        subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)
        r = wrk(url, 2, args.duration, script)
        subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
        with open(out(i) + ".1") as f:
            total = int(re.search(r"^totals: (\d+)", f.read(), re.M).group(1))
        return (total / max(r["n"], 1), r["non2xx"])

    res = each_alone(args, tmp, cfg, cli, env, body, up, bare,
                     lambda i: ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out(i)}"],
                     measure, deadline=120)
    print("user-space instructions per request under callgrind (every thread of the process), "
          "2 connections")
    print(f"{'target':<38} {'Ir/req':>9} {'x bare':>7} {'stage +Ir':>10} {'non-2xx':>8}")
    base = res["passthrough"][0]
    prev = None
    for name, (ir, bad) in res.items():
        step = f"{ir - prev:+10.0f}" if prev is not None and name.startswith("sluice") else ""
        print(f"{name:<38} {ir:>9.0f} {ir / base:>7.2f} {step:>10} {bad:>8}")
        if name != "passthrough":
            prev = ir


def ladder(args, tmp, cfg, cli, env, body, up, bare, levels):
    """Every stage in a sluice of its own (a copy of the store: its own audit writer), beside
    the mock, the bare passthrough and its buffering variant, all driven in one run; CPU per
    request is the primary figure."""
    scripts = ladder_keys(cli, tmp, body)
    buffered = free_port()
    procs = [
        subprocess.Popen([os.path.join(REL, "examples", "mock"), str(up)]),
        subprocess.Popen([os.path.join(REL, "examples", "passthrough"), str(bare), str(up)],
                         stderr=subprocess.DEVNULL),
        subprocess.Popen([os.path.join(REL, "examples", "passthrough"), str(buffered), str(up),
                          "buffer"], stderr=subprocess.DEVNULL),
    ]
    targets = {"direct": (up, procs[0].pid, "none"), "passthrough": (bare, procs[1].pid, "none"),
               "passthrough, buffering": (buffered, procs[2].pid, "none")}
    for i, (name, skip, key) in enumerate(LADDER):
        scfg, prox = stage_config(tmp, cfg, i)
        p = subprocess.Popen([args.sluice, "serve", "--config", scfg],
                             env=dict(env, SLUICE_BENCH_SKIP=skip),
                             stderr=open(os.path.join(tmp, f"stage{i}.log"), "w"))
        procs.append(p)
        targets[f"sluice: {name}"] = (prox, p.pid, key)
    try:
        for port, _, _ in targets.values():
            wait_port(port)
        runs = {}
        for rnd in range(args.rounds):
            for conns in levels:
                order = list(targets.items())
                for name, (port, pid, key) in (order if rnd % 2 == 0 else order[::-1]):
                    url = f"http://127.0.0.1:{port}/v1/chat/completions"
                    wrk(url, conns, 2, scripts[key])  # warm-up
                    runs.setdefault((name, conns), []).append(
                        wrk(url, conns, args.duration, scripts[key], pid))
        med = lambda xs: sorted(xs)[len(xs) // 2]
        res = {k: {f: med([r[f] for r in v]) for f in v[0]} for k, v in runs.items()}
        print(f"medians over {args.rounds} round(s), order reversed every other round; "
              f"CPU us/req is the target process's user+system time per request")
        for conns in levels:
            b = res[("passthrough", conns)]
            bcpu = b["user_us"] + b["sys_us"]
            print(f"\nc={conns}")
            print(f"{'target':<38} {'req/s':>9} {'x bare':>7} {'p99 us':>8} {'CPU us/req':>11} "
                  f"{'x bare':>7} {'stage +us':>10} {'non-2xx':>8}")
            prev = None
            for name in targets:
                r = res[(name, conns)]
                cpu = r["user_us"] + r["sys_us"]
                step = f"{cpu - prev:+10.1f}" if prev is not None and name.startswith("sluice") else ""
                print(f"{name:<38} {r['rps']:>9.0f} {r['rps'] / b['rps']:>7.2f} {r['p99_us']:>8.0f} "
                      f"{cpu:>11.1f} {cpu / bcpu:>7.2f} {step:>10} {r['non2xx']:>8}")
                if name.startswith("sluice"):
                    prev = cpu
                elif name == "passthrough, buffering":
                    prev = cpu
        bad = sum(r["non2xx"] for r in res.values())
        if bad:
            print(f"WARNING: {bad} non-2xx responses", file=sys.stderr)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
