#!/usr/bin/env python3
"""Writes BENCHMARKS.md (to stdout) from the raw results ci/bench.sh left in
a directory: per load and round, `NAME.rK.json` (the `bench --json` line)
and `NAME.rK.commits.json` (our server's commit counter before/after), and
`machine.json`; then appends the hand-written notes file. A load run in
several rounds is reported by the median of each figure over its rounds
(errors are summed), with the range of the key figure shown beside it."""

import json
import statistics
import sys
from pathlib import Path

out = Path(sys.argv[1])
notes = Path(sys.argv[2])


def rounds(name):
    """The raw results of every round of load NAME."""
    found = []
    for p in sorted(out.glob(f"{name}.r*.json")):
        if p.name.endswith(".commits.json"):
            continue
        try:
            r = json.loads(p.read_text().strip().splitlines()[-1])
        except (OSError, ValueError, IndexError):
            continue
        r["_commits"] = commits_of(p.with_name(p.name[: -len(".json")] + ".commits.json"))
        found.append(r)
    return found


def commits_of(p):
    try:
        c = json.loads(p.read_text())
        if c["commits_before"] is None or c["commits_after"] is None:
            return None
        return c["commits_after"] - c["commits_before"]
    except (OSError, ValueError, KeyError):
        return None


def median_of(values):
    """Median of each number (recursively through objects); counts of
    errors are summed instead, so no round's error is hidden."""
    first = values[0]
    if isinstance(first, dict):
        keys = {k for v in values if isinstance(v, dict) for k in v}
        merged = {}
        for k in keys:
            vs = [v[k] for v in values if isinstance(v, dict) and k in v and v[k] is not None]
            if not vs:
                merged[k] = None
            elif k in ("errors", "error_total"):
                merged[k] = sum_counts(vs)
            else:
                merged[k] = median_of(vs)
        return merged
    if isinstance(first, bool) or not isinstance(first, (int, float)):
        return first
    return statistics.median(values)


def sum_counts(vs):
    if isinstance(vs[0], dict):
        total = {}
        for v in vs:
            for k, n in v.items():
                total[k] = total.get(k, 0) + n
        return total
    return sum(vs)


def load(name):
    """Load NAME's figures: the median over its rounds, plus `_runs` and the
    (min, max) of the server's CPU per unit and of the rate."""
    rs = rounds(name)
    if not rs:
        return None
    m = median_of(rs)
    m["_runs"] = len(rs)
    cpu = [get(r, "server", "cpu_ms_per_unit") for r in rs]
    cpu = [c for c in cpu if c is not None]
    m["_cpu_range"] = (min(cpu), max(cpu)) if cpu else None
    m["_rate_range"] = (min(r["rate"] for r in rs), max(r["rate"] for r in rs))
    per = [r["_commits"] / r["completed"] for r in rs if r["_commits"] is not None and r["completed"]]
    m["_commits_per_unit"] = statistics.median(per) if per else None
    return m


def span(rng, digits):
    if rng is None:
        return "n/a"
    return f"{rng[0]:,.{digits}f}–{rng[1]:,.{digits}f}"


machine = json.loads((out / "machine.json").read_text())
NAMES = {
    "python-disk": "Python 0.8.0, on-disk DB",
    "python-memory": "Python 0.8.0, `:memory:` DB",
    "ours-disk": "ours, default (on-disk, durable)",
    "ours-fsync": "ours, `--power-loss-durable`",
    "ours-memory": "ours, `:memory:` DB (no storage I/O)",
}


def f(x, digits=1):
    return "n/a" if x is None else f"{x:,.{digits}f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def get(r, *path):
    for k in path:
        if r is None:
            return None
        r = r.get(k)
    return r


def kernel_share(r):
    total, system = get(r, "server", "cpu_s"), get(r, "server", "cpu_system_s")
    if not total or system is None:
        return "n/a"
    return f"{100 * system / total:.0f}%"


def errors(r):
    if r is None:
        return "not run"
    if not r["error_total"]:
        return "0"
    return ", ".join(f"{k} {n}" for k, n in r["errors"].items())


def gen(r):
    g = get(r, "generator")
    if g is None:
        return "n/a"
    mark = " (saturated)" if g["saturated"] else ""
    return f"{g['cpu_per_wall'] * 100:.0f}%{mark}"


lines = []
w = lines.append
w("# Benchmarks: our mailbox server vs the Python server 0.8.0")
w("")
runs = max((load(n) or {}).get("_runs", 1) for n in ["ours-disk.pairs10", "python-memory.pairs10"])
w("Written by `ci/bench.sh` (run it to refresh this file). Same machine, same")
w(f"loads, one after the other, in {runs} round{'s' if runs != 1 else ''} that each run every server and")
w("configuration in turn (so a slow phase of the VM hits all of them); each")
w("figure is the median over the rounds, with the range of the key figure")
w("beside it. The load generator is `wormhole-mailbox-conformance bench` on a")
w("current-thread runtime; both servers listen on 127.0.0.1 only.")
w("")
w("## Machine")
w("")
w(f"* date: {machine['date']}")
w(f"* CPU: {machine['nproc']} cores ({machine['cpu']}), memory {machine['memory']}, Linux {machine['kernel']}")
w(f"* load average before / after the run: {machine['loadavg_before']} / {machine['loadavg_after']}"
  " (anything well above 0 means another process competed for the 2 cores, which")
w("  hurts latency and throughput figures more than CPU-per-unit and RSS figures)")
w(f"* ours: {machine['ours']}, {machine['rustc']}, release build")
w(f"* Python: {machine['python_server']}, started as `twist wormhole-mailbox --port=tcp:PORT:interface=127.0.0.1 --channel-db=...`")
w(f"* each timed load ran {machine['seconds']} s in each of {machine.get('rounds', 1)} round(s); idle held {machine['idle']:,} connections (first round only)")
w("")

# ---------------------------------------------------------------- pairs
w("## Pairs")
w("")
w("One pair: two connections, welcome, bind, allocate + claim / claim, open,")
w("4 rounds in which both sides add a 64-byte body and wait for the peer's copy,")
w("release, close, disconnect. A *message round* is both `add`s sent until both")
w("peers' copies arrived. Server CPU is utime+stime from `/proc/PID/stat` over")
w("the run, divided by completed pairs; *in kernel* is the stime part of it.")
w("")
w("| server | concurrent pairs | pairs/s | round p50 ms | p90 | p99 | max | connect p99 ms | server CPU ms/pair | (range over runs) | in kernel | errors | generator CPU |")
w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
for cfg in ["python-disk", "python-memory", "ours-disk", "ours-fsync", "ours-memory"]:
    for c in [10, 100]:
        r = load(f"{cfg}.pairs{c}")
        if r is None:
            continue
        w(f"| {NAMES[cfg]} | {c} | {f(r['rate'])} | {f(r['round_ms']['p50'], 2)} | {f(r['round_ms']['p90'], 2)} "
          f"| {f(r['round_ms']['p99'], 2)} | {f(r['round_ms']['max'], 2)} | {f(r['connect_ms']['p99'], 2)} "
          f"| {f(get(r, 'server', 'cpu_ms_per_unit'), 3)} | {span(r['_cpu_range'], 3)} | {kernel_share(r)} | {errors(r)} | {gen(r)} |")
w("")
w("Ratios (ours default / Python):")
w("")
w("| concurrent pairs | pairs/s vs on-disk | pairs/s vs in-memory | Python in-memory CPU per pair / ours |")
w("|---:|---:|---:|---:|")
for c in [10, 100]:
    o, pd, pm = load(f"ours-disk.pairs{c}"), load(f"python-disk.pairs{c}"), load(f"python-memory.pairs{c}")
    w(f"| {c} | {f(ratio(get(o, 'rate'), get(pd, 'rate')))}× | {f(ratio(get(o, 'rate'), get(pm, 'rate')))}× "
      f"| {f(ratio(get(pm, 'server', 'cpu_ms_per_unit'), get(o, 'server', 'cpu_ms_per_unit')))}× |")
w("")

# ---------------------------------------------------------------- churn
w("## Churn")
w("")
w("Connect, welcome, bind (wait for the `ack`), close; 40 at a time, from a "
  "generator with 2 threads (with one, the generator saturates before our "
  "server does).")
w("")
w("| server | connections/s | (range over runs) | connect p50 ms | connect p99 ms | server CPU ms/connection | errors | generator CPU |")
w("|---|---:|---:|---:|---:|---:|---|---:|")
for cfg in ["python-disk", "python-memory", "ours-disk"]:
    r = load(f"{cfg}.churn")
    if r is None:
        continue
    w(f"| {NAMES[cfg]} | {f(r['rate'])} | {span(r['_rate_range'], 1)} | {f(r['connect_ms']['p50'], 2)} | {f(r['connect_ms']['p99'], 2)} "
      f"| {f(get(r, 'server', 'cpu_ms_per_unit'), 3)} | {errors(r)} | {gen(r)} |")
oc, pc = load("ours-disk.churn"), load("python-disk.churn")
w("")
w(f"Ratio: ours / Python on-disk = {f(ratio(get(oc, 'rate'), get(pc, 'rate')))}×.")
w("")

# ---------------------------------------------------------------- idle
w("## Idle connections")
w("")
w("N connections opened (100 at a time), each bound; the server's RSS")
w("(`VmRSS`) is read before the first and 2 s after the last was opened, and")
w("the difference divided by N. Then every connection is checked alive with a")
w("`ping` (its latency is the *ping* column).")
w("")
w("| server | held | alive | RSS before KiB | RSS with all open KiB | KiB per connection | ping p99 ms | open rate conn/s | errors |")
w("|---|---:|---:|---:|---:|---:|---:|---:|---|")
for cfg in ["python-disk", "ours-disk"]:
    r = load(f"{cfg}.idle")
    if r is None:
        continue
    w(f"| {NAMES[cfg]} | {r['completed']:,} | {r.get('alive')} | {get(r, 'server', 'rss_before_kib')} "
      f"| {get(r, 'server', 'rss_after_kib')} | {f(get(r, 'server', 'rss_per_conn_kib'), 2)} "
      f"| {f(r['round_ms']['p99'], 2)} | {f(r['rate'])} | {errors(r)} |")
w("")

# ---------------------------------------------------------------- commits
w("## Commits per pair (group commit)")
w("")
w("Our server's channel-DB transactions (`wormhole_mailbox_commit_duration_seconds_count`")
w("from `--metrics`) during the pairs load, divided by completed pairs. A pair")
w("makes about 15 state-changing commands (claims, opens, 8 adds, releases,")
w("closes); each is committed before its `ack` is sent, and commands that")
w("arrive while a commit runs share the next one.")
w("")
w("| configuration | concurrent pairs | pairs per run (median) | commits per pair (median) |")
w("|---|---:|---:|---:|")
cpp = {}
for cfg in ["ours-disk", "ours-fsync", "ours-memory"]:
    for c in [10, 100]:
        r = load(f"{cfg}.pairs{c}")
        if r is None:
            continue
        per = r["_commits_per_unit"]
        cpp[(cfg, c)] = per
        w(f"| {NAMES[cfg]} | {c} | {r['completed']:,.0f} | {f(per, 2)} |")
w("")

# ---------------------------------------------------------------- targets
w("## Targets (issue 6)")
w("")
w("| target | threshold | measured | reached |")
w("|---|---|---|---|")


def verdict(ok):
    return "n/a" if ok is None else ("**yes**" if ok else "**no**")


pm10, pm100 = load("python-memory.pairs10"), load("python-memory.pairs100")
o10, o100 = load("ours-disk.pairs10"), load("ours-disk.pairs100")
for label, o, p in [("10", o10, pm10), ("100", o100, pm100)]:
    oc_ = get(o, "server", "cpu_ms_per_unit")
    pc_ = get(p, "server", "cpu_ms_per_unit")
    ok = None if oc_ is None or pc_ is None else oc_ <= pc_ / 20
    w(f"| server CPU per pair ({label} concurrent) ≤ 1/20 of Python in-memory | ≤ {f(None if pc_ is None else pc_ / 20, 3)} ms "
      f"| {f(oc_, 3)} ms (Python in-memory {f(pc_, 3)} ms, ratio {f(ratio(pc_, oc_))}×) | {verdict(ok)} |")
pd100 = load("python-disk.pairs100")
rr = ratio(get(o100, "rate"), get(pd100, "rate"))
w(f"| pairs/s at 100 concurrent ≥ 30× Python on-disk | ≥ {f(None if pd100 is None else pd100['rate'] * 30)} pairs/s "
  f"| {f(get(o100, 'rate'))} pairs/s ({f(rr)}×) | {verdict(None if rr is None else rr >= 30)} |")
p99 = get(o10, "round_ms", "p99")
w(f"| p99 message round at 10 concurrent pairs ≤ 2 ms | ≤ 2 ms | {f(p99, 2)} ms | {verdict(None if p99 is None else p99 <= 2.0)} |")
cr = ratio(get(oc, "rate"), get(pc, "rate"))
w(f"| churn ≥ 10× Python | ≥ {f(None if pc is None else pc['rate'] * 10)} conn/s | {f(get(oc, 'rate'))} conn/s ({f(cr)}×) "
  f"| {verdict(None if cr is None else cr >= 10)} |")
oi = load("ours-disk.idle")
kib = get(oi, "server", "rss_per_conn_kib")
w(f"| {machine['idle']:,} idle bound connections ≤ 5 KiB RSS each | ≤ 5 KiB | {f(kib, 2)} KiB "
  f"({get(oi, 'alive')} of {get(oi, 'completed')} alive after the hold) | {verdict(None if kib is None else kib <= 5.0)} |")
w(f"| durability kept, group commit: commits per pair stated | one commit per batch | default: {f(cpp.get(('ours-disk', 10)), 2)} (10 concurrent), "
  f"{f(cpp.get(('ours-disk', 100)), 2)} (100); power-loss-durable: {f(cpp.get(('ours-fsync', 10)), 2)} / {f(cpp.get(('ours-fsync', 100)), 2)} | stated |")
w("")
w("A target marked **no** is explained in the notes below.")
w("")
try:
    w(notes.read_text().rstrip())
except OSError:
    pass
print("\n".join(lines))
