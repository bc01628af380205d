#!/usr/bin/env python3
"""Tables (Markdown) and pass/fail checks for the JSON lines of webchat-loadgen.

    report.py pairs FILE [--smoke 0|1]
    report.py compare FILE
    report.py group-fanout FILE [--smoke 0|1] [--rc N] [--expect ROWS]
    report.py idle|replay|storm|transport-floor FILE [--rc N] [--expect ROWS]
    report.py markdown RESULTS_DIR     # machine info, commands and every table -> stdout

Each subcommand prints a table and exits 1 when the run is not healthy (lost/undelivered
messages, a failed generator, fewer rows than expected); `pairs` and `group-fanout` outside
--smoke only print, as before.
"""
import argparse
import json
import os
import platform
import subprocess
import sys


def rows_of(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def fmt(x, nd=1):
    if x is None:
        return "–"
    if isinstance(x, float):
        if abs(x) >= 100:
            return f"{x:,.0f}"
        return f"{x:.{nd}f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def split_cpu(r, key="server_cpu_us_per_msg_by_pid", nodes=2):
    """(nodes µs, Redis µs): server_pids are the `nodes` chat nodes, then the Redis server or
    the Redis Cluster's masters (bench/run.sh)."""
    pids = [str(p) for p in r.get("server_pids") or []]
    by = r.get(key) or {}
    if len(pids) <= nodes or any(by.get(p) is None for p in pids):
        return None, None
    return sum(by[p] for p in pids[:nodes]), sum(by[p] for p in pids[nodes:])


# ---------------------------------------------------------------- pairs (scenario 1)
def pairs(rows, smoke):
    out = ["| offered msgs/s | delivered msgs/s | p50 ms | p99 ms | p999 ms | lost | dup | "
           "servers+Redis CPU µs/msg | generator CPU µs/msg |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['offered_rate']:.0f} | {r['delivered_per_sec']:.0f} | {r['latency_p50_ms']} | "
                   f"{r['latency_p99_ms']} | {r['latency_p999_ms']} | {r['lost']} | {r['duplicates']} | "
                   f"{r['server_cpu_us_per_msg']} | {r['gen_cpu_us_per_msg']} |")
    print("\n" + "\n".join(out))
    bad = [r for r in rows if r["lost"] or r["acked_total"] != r["sent_total"] or r["ack_errors"]]
    if smoke:
        ok = rows and not bad and all(r["delivered"] == r["acked"] for r in rows)
        print(f"pairs smoke: {'passed' if ok else 'FAILED'}")
        return bool(ok)
    return True


# ---------------------------------------------------------------- compare (scenario 1 vs baseline)
def saturation(rs):
    return max((r["delivered_per_sec"] for r in rs), default=0.0)


def compare_tables(rows):
    labels = []
    for r in rows:
        if r["label"] not in labels:
            labels.append(r["label"])
    by = {lab: sorted((r for r in rows if r["label"] == lab), key=lambda r: r["offered_rate"])
          for lab in labels}
    out = ["| server | offered msgs/s | delivered msgs/s | p50 ms | p99 ms | p999 ms | lost | "
           "nodes CPU µs/msg | Redis CPU µs/msg | generator CPU µs/msg |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for lab in labels:
        for r in by[lab]:
            nodes, redis = split_cpu(r)
            sat = "" if r["keeps_up"] else " (saturated)"
            out.append(f"| {lab} | {r['offered_rate']:,.0f} | {r['delivered_per_sec']:,.0f}{sat} | "
                       f"{fmt(r['latency_p50_ms'], 2)} | {fmt(r['latency_p99_ms'], 2)} | "
                       f"{fmt(r['latency_p999_ms'], 2)} | {r['lost']} | {fmt(nodes)} | {fmt(redis)} | "
                       f"{fmt(r['gen_cpu_us_per_msg'])} |")
    summary = []
    base = by.get("baseline", [])
    if base:
        s_b = saturation(base)
        # CPU is compared at the highest rate every server kept up with (else the baseline's).
        def kept_rates(rs):
            return {r["offered_rate"] for r in rs if r["keeps_up"]}
        common = set.intersection(*(kept_rates(by[lab]) for lab in labels))
        ref_rate = max(common or kept_rates(base) or {None}, key=lambda x: x or 0)
        half = min(base, key=lambda r: abs(r["offered_rate"] - s_b / 2))["offered_rate"]
        summary += ["| | saturation msgs/s (max delivered) | × baseline | "
                    f"nodes CPU µs/msg at {fmt(ref_rate)} msgs/s | ÷ baseline | "
                    f"nodes+Redis CPU µs/msg at {fmt(ref_rate)} | ÷ baseline | "
                    f"p99 ms at {fmt(half)} msgs/s (≈ half the baseline's saturation) | ÷ baseline | "
                    "saturation × streams peer | p99 ÷ streams peer |",
                    "|---|---|---|---|---|---|---|---|---|---|---|"]

        def at(rs, rate):
            return next((r for r in rs if r["offered_rate"] == rate), None)

        rb, hb = at(base, ref_rate), at(base, half)
        # The second Node peer (redis streams adapter with connection state recovery).
        streams = by.get("baseline-streams", [])
        s_s = saturation(streams)
        hs = at(streams, half)
        nb, xb = split_cpu(rb) if rb else (None, None)
        for lab in labels:
            rs = by[lab]
            r, h = at(rs, ref_rate), at(rs, half)
            n, x = split_cpu(r) if r else (None, None)
            tot, totb = (n + x if n is not None else None), (nb + xb if nb is not None else None)
            ratio = lambda a, b: fmt(a / b, 2) if a is not None and b else "–"  # noqa: E731
            p99, p99b = (h["latency_p99_ms"] if h else None), (hb["latency_p99_ms"] if hb else None)
            summary.append(f"| {lab} | {saturation(rs):,.0f} | {ratio(saturation(rs), s_b)} | {fmt(n)} | "
                           f"{ratio(n, nb)} | {fmt(tot)} | {ratio(tot, totb)} | {fmt(p99, 2)} | "
                           f"{ratio(p99, p99b)} | {ratio(saturation(rs), s_s)} | "
                           f"{ratio(p99, hs['latency_p99_ms'] if hs else None)} |")
    return "\n".join(out), "\n".join(summary)


# ---------------------------------------------------------------- group fan-out (scenario 3)
def group_fanout(rows):
    out = ["| members | messages | create ack ms | create ms (last notify) | fan-out p50 ms | fan-out p99 ms | "
           "fan-out max ms | sender ack p50 ms | delivered / expected | servers+Redis CPU µs/delivery | "
           "generator CPU µs/delivery | steal ms, most in one fan-out |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        # Steal: the hypervisor ran something else while this VM's CPUs were runnable; a slow
        # fan-out with steal was slowed by the host, not by the servers.
        steal = [s for s in r.get("steal_ms") or [] if s is not None]
        out.append(f"| {r['members']} | {r['messages']} | {r['create_ack_ms']} | {r['create_ms']} | "
                   f"{r['fanout_ms_p50']} | {r['fanout_ms_p99']} | {r['fanout_ms_max']} | {r['ack_ms_p50']} | "
                   f"{r['delivered_total']} / {r['expected_per_message'] * r['messages']} | "
                   f"{r['server_cpu_us_per_msg']} | {r['gen_cpu_us_per_msg']} | "
                   f"{fmt(max(steal), 0) if steal else '–'} |")
    return "\n".join(out)


# ---------------------------------------------------------------- idle (scenario 2)
def idle(rows):
    out = ["| server | sockets joined | connected after hold | ramp s | node RSS before MiB | after MiB | "
           "**node KiB/conn** | Redis KiB/conn | node CPU µs/conn | errors |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pids = [str(p) for p in r.get("server_pids") or []]
        node = r["rss"].get(pids[0], {}) if pids else {}
        redis = r["rss"].get(pids[-1], {}) if len(pids) > 1 else {}
        cpu = (r.get("server_cpu_us_per_conn_by_pid") or {}).get(pids[0]) if pids else None
        mib = lambda k: fmt(node.get(k) / 1024, 1) if node.get(k) is not None else "–"  # noqa: E731
        errs = sum(r["connect_errors"].values())
        out.append(f"| {r['label']} | {r['joined']:,} | {r['connected_after_hold']:,} | {r['ramp_s']:.1f} | "
                   f"{mib('before_kib')} | {mib('after_kib')} | **{fmt(node.get('kib_per_conn'), 2)}** | "
                   f"{fmt(redis.get('kib_per_conn'), 2)} | {fmt(cpu)} | {errs} |")
    return "\n".join(out)


def idle_ok(rows):
    return all(r["joined"] == r["sockets"] and r["connected_after_hold"] == r["joined"] for r in rows)


# ---------------------------------------------------------------- replay (scenario 4)
def replay(rows):
    out = ["| messages | queued (acked) in s | join ms | first ms | **last ms** | received | dup | out of order | "
           "servers+Redis CPU µs/msg | generator CPU µs/msg |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['messages']:,} | {r['queued_acked']:,} in {r['queue_s']:.2f} | {fmt(r['join_ms'])} | "
                   f"{fmt(r['first_ms'])} | **{fmt(r['last_ms'])}** | {r['received']:,} | {r['duplicates']} | "
                   f"{r['out_of_order']} | {fmt(r['server_cpu_us_per_msg'])} | {fmt(r['gen_cpu_us_per_msg'])} |")
    return "\n".join(out)


def replay_ok(rows):
    return all(r["delivered_all"] and r["queued_acked"] == r["messages"] for r in rows)


# ---------------------------------------------------------------- storm (scenario 5)
def storm(rows):
    out = ["| users × msgs | joined | connect errors | connect p50 / p99 / max ms | all joined ms | "
           "**drain ms** | delivered | dup | servers+Redis CPU µs/msg | generator CPU µs/msg |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        errs = sum(r["connect_errors"].values())
        out.append(f"| {r['users']:,} × {r['per_user']} | {r['joined']:,} | {errs} | "
                   f"{fmt(r['connect_ms_p50'])} / {fmt(r['connect_ms_p99'])} / {fmt(r['connect_ms_max'])} | "
                   f"{fmt(r['all_joined_ms'])} | **{fmt(r['drain_ms'])}** | "
                   f"{r['delivered']:,} / {r['expected']:,} ({r['delivered_pct']:.1f} %) | {r['duplicates']} | "
                   f"{fmt(r['server_cpu_us_per_msg'])} | {fmt(r['gen_cpu_us_per_msg'])} |")
    return "\n".join(out)


def storm_ok(rows):
    return all(r["delivered"] == r["expected"] and r["queued_acked"] == r["users"] * r["per_user"]
               for r in rows)


# ---------------------------------------------------------------- whole report
def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:  # noqa: BLE001
        return ""


def machine():
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                  if line.startswith("model name")), platform.processor())
    mem = next((int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal")), 0)
    return (f"- {os.cpu_count()} vCPUs ({model}), {mem / 1024 / 1024:.0f} GiB RAM, kernel {platform.release()}\n"
            f"- {sh('redis-server --version').split(' sha=')[0]}; Node {sh('node --version')}; "
            f"commit {sh('git rev-parse --short HEAD')}; {sh('date -u +%Y-%m-%dT%H:%MZ')}\n"
            f"- load average when the report was written: {open('/proc/loadavg').read().split()[:3]}")


def markdown(d):
    parts = ["# Benchmark report (bench/run.sh --scenario all)\n", "## Machine", machine()]
    rows = rows_of(os.path.join(d, "compare.jsonl"))
    if rows:
        table, summary = compare_tables(rows)
        parts += ["\n## Scenario 1 side by side: `bash bench/run.sh --scenario compare`", table, "", summary]
    rows = rows_of(os.path.join(d, "idle.jsonl"))
    if rows:
        parts += ["\n## Scenario 2, idle sockets: `bash bench/run.sh --scenario idle`", idle(rows)]
    rows = rows_of(os.path.join(d, "replay.jsonl"))
    if rows:
        parts += ["\n## Scenario 4, replay: `bash bench/run.sh --scenario replay`", replay(rows)]
    rows = rows_of(os.path.join(d, "storm.jsonl"))
    if rows:
        parts += ["\n## Scenario 5, reconnect storm: `bash bench/run.sh --scenario storm`", storm(rows)]
    print("\n".join(parts))


# ---------------------------------------------------------------- transport floor (scenario 3)
def transport_floor(rows):
    out = ["| connections | rounds | frame / answer bytes | wall p50 / max ms | server CPU ms per round | "
           "client CPU ms per round |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['connections']:,} | {r['rounds']} | {r['frame_bytes']} / {r['answer_bytes']} | "
                   f"{fmt(r['wall_ms_p50'])} / {fmt(r['wall_ms_max'])} | {fmt(r['server_cpu_ms_mean'])} | "
                   f"{fmt(r['client_cpu_ms_mean'])} |")
    return "\n".join(out)


def transport_floor_ok(rows):
    return all(r["rounds"] == len(r["wall_ms"]) and r["rounds"] > 0 for r in rows)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("kind")
    ap.add_argument("path")
    ap.add_argument("--smoke", default="0")
    ap.add_argument("--rc", default="0")
    ap.add_argument("--expect", type=int, default=None)
    a = ap.parse_args()
    smoke = a.smoke == "1"
    if a.kind == "markdown":
        markdown(a.path)
        return 0
    rows = rows_of(a.path)
    enough = a.expect is None or len(rows) == a.expect
    ok = a.rc == "0" and enough
    if a.kind == "pairs":
        return 0 if pairs(rows, smoke) and a.rc == "0" else 1
    if a.kind == "compare":
        table, summary = compare_tables(rows)
        print("\n" + table + "\n\n" + summary)
        return 0 if ok and rows and all(r["lost"] == 0 for r in rows) else 1
    if a.kind == "group-fanout":
        print("\n" + group_fanout(rows))
        ok = ok and all(r["delivered_all"] and not r["misrouted"] for r in rows)
        for r in rows:
            if not r["delivered_all"]:
                print(f"group-fanout: some member missed a message ({r['members']} members: "
                      f"delivered {r['delivered']} of {r['expected_per_message']} each)")
        if smoke:
            print(f"group-fanout smoke: {'passed' if ok else 'FAILED'}")
        return 0 if ok else 1
    table, healthy = {"idle": (idle, idle_ok), "replay": (replay, replay_ok),
                      "storm": (storm, storm_ok),
                      "transport-floor": (transport_floor, transport_floor_ok)}[a.kind]
    print("\n" + table(rows))
    ok = ok and bool(rows) and healthy(rows)
    print(f"{a.kind}: {'passed' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
