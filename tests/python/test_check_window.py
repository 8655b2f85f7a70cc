#!/usr/bin/env python3
"""Self-test of check_window.py: a tiny NDJSON input and a hand-made Parquet output layout.

    python tests/python/test_check_window.py        # exit code 0 when every case behaves

The correct layout must pass (with --dead-letters too); each perturbation (a sum off by a
millionth, a min off by one ulp, a missing row, an extra row, a duplicated row, a wrong hour
partition, a time column without time zone, a missing or extra dead letter, a wrong `raw`)
must fail.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict

import pyarrow as pa
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKER = os.path.join(HERE, "check_window.py")
WINDOW = 60_000
START = 1_767_225_600_000  # 2026-01-01T00:00:00Z
UTC_MS = pa.timestamp("ms", tz="UTC")


def make_input(path: str) -> tuple[list[dict], list[dict]]:
    """Writes the NDJSON input; returns (good points, the malformed log)."""
    good, lines, bad = [], [], []
    # Points from 2025-12-31T23:58 to 2026-01-01T01:01: two dates and three hours.
    times = [START - 120_000 + k * 7_919 for k in range(12)]
    times += [START + 3_600_000 - 61_000 + k * 10_007 for k in range(14)]
    times += [START + 7_000, START + 7_000]  # same ms twice
    for k, ts in enumerate(times):
        host = f"h{k % 3:05}"
        name = ["cpu", "mem"][k % 2]
        tenant = f"t{k % 2}"
        value = round(((k * 37) % 101) + (k % 7) / 8 + 0.125, 3)
        if k == 5:
            value = -0.5  # negative allowed
        p = {"ts": ts, "tenant": tenant, "host": host, "name": name, "value": value}
        good.append(p)
        lines.append(json.dumps(p, separators=(",", ":")).encode())
    # Malformed lines, inserted (line numbers are 1-based in the final file).
    malformed = [
        (0, "bad_json", b'{"ts":1767225600000,"tenant":"t0","host":"h00001","name":"cpu","val'),
        (4, "missing_value", b'{"ts":1767225600000,"tenant":"t0","host":"h00001","name":"cpu"}'),
        (9, "value_string", b'{"ts":1767225600000,"tenant":"t0","host":"h00001","name":"cpu","value":"54.5"}'),
        (9, "ts_not_time", b'{"ts":"yesterday","tenant":"t0","host":"h00001","name":"cpu","value":54.5}'),
        (20, "invalid_utf8", b'{"ts":1767225600000,"tenant":"t0","host":"h0\xc3\x28","name":"cpu","value":54.5}'),
        (len(lines), "bad_json", b"["),
    ]
    out: list[bytes] = []
    mi = 0
    for i in range(len(lines) + 1):
        while mi < len(malformed) and malformed[mi][0] == i:
            out.append(malformed[mi][2])
            bad.append({"line": len(out), "kind": malformed[mi][1], "raw": malformed[mi][2]})
            mi += 1
        if i < len(lines):
            out.append(lines[i])
    with open(path, "wb") as f:
        f.write(b"\n".join(out) + b"\n")
    return good, bad


def aggregate(points: list[dict]) -> list[dict]:
    groups: dict[tuple, list[float]] = defaultdict(list)
    for p in points:
        ws = p["ts"] - p["ts"] % WINDOW
        groups[(ws, p["tenant"], p["name"], p["host"])].append(float(p["value"]))
    rows = []
    for (ws, tenant, name, host), vs in sorted(groups.items()):
        s = math.fsum(vs)
        rows.append(dict(window_start=ws, window_end=ws + WINDOW, tenant=tenant, name=name, host=host,
                         count=len(vs), sum=s, min=min(vs), max=max(vs), avg=s / len(vs)))
    return rows


def partition_of(ms: int) -> str:
    import datetime as dt
    t = dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc)
    return f"date={t:%Y-%m-%d}/hour={t:%H}"


def write_table(out: str, rows: list[dict], time_type=UTC_MS) -> None:
    by_part: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_part[r.get("_partition") or partition_of(r["window_start"])].append(r)
    schema = pa.schema([
        ("window_start", time_type), ("window_end", time_type), ("tenant", pa.string()), ("name", pa.string()),
        ("host", pa.string()), ("count", pa.int64()), ("sum", pa.float64()), ("min", pa.float64()),
        ("max", pa.float64()), ("avg", pa.float64()),
    ])
    for part, rs in by_part.items():
        d = os.path.join(out, "per_minute", part)
        os.makedirs(d, exist_ok=True)
        cols = {f.name: [r[f.name] for r in rs] for f in schema}
        pq.write_table(pa.table(cols, schema=schema), os.path.join(d, f"part-0000-{min(r['window_start'] for r in rs)}.parquet"))


def write_dead_letters(out: str, input_path: str, bad: list[dict]) -> None:
    d = os.path.join(out, "dead_letters", "source=metrics")
    os.makedirs(d, exist_ok=True)
    schema = pa.schema([("file", pa.string()), ("line", pa.int64()), ("reason", pa.string()),
                        ("raw", pa.binary()), ("ts", UTC_MS)])
    t = pa.table({
        "file": [input_path] * len(bad),
        "line": [b["line"] for b in bad],
        "reason": [f"{b['kind']}: something" for b in bad],
        "raw": [b["raw"] for b in bad],
        "ts": [None] * len(bad),
    }, schema=schema)
    pq.write_table(t, os.path.join(d, "part-0000-0.parquet"))


def run(input_path: str, out: str, log: str | None) -> tuple[int, dict]:
    cmd = [sys.executable, CHECKER, input_path, out, "per_minute", "--window-ms", str(WINDOW), "--group-by", "host"]
    if log:
        cmd += ["--dead-letters", log]
    p = subprocess.run(cmd, capture_output=True, text=True)
    try:
        summary = json.loads(p.stdout)
    except json.JSONDecodeError:
        summary = {"unparsable_stdout": p.stdout, "stderr": p.stderr}
    return p.returncode, summary


def main() -> int:
    failures = []
    with tempfile.TemporaryDirectory(prefix="test_check_window.") as tmp:
        input_path = os.path.join(tmp, "metrics.ndjson")
        good, bad = make_input(input_path)
        log = os.path.join(tmp, "malformed.jsonl")
        with open(log, "w") as f:
            for b in bad:
                f.write(json.dumps({"line": b["line"], "kind": b["kind"]}) + "\n")
        rows = aggregate(good)
        assert len({partition_of(r["window_start"]) for r in rows}) >= 3, "the layout spans several partitions"

        def case(name: str, expect_ok: bool, rows=rows, dead=bad, time_type=UTC_MS, with_log=True, raw_fix=None):
            out = os.path.join(tmp, "out-" + name)
            shutil.rmtree(out, ignore_errors=True)
            write_table(out, rows, time_type)
            if dead is not None:
                write_dead_letters(out, input_path, dead)
            code, summary = run(input_path, out, log if with_log else None)
            ok = (code == 0) == expect_ok and summary.get("ok") is expect_ok
            print(f"{'PASS' if ok else 'FAIL'} {name}: exit {code}, ok={summary.get('ok')}, "
                  f"mismatches={summary.get('mismatches')}, errors={summary.get('errors')}")
            if not ok:
                failures.append(name)
                print(json.dumps(summary, indent=2, default=str))
            return summary

        s = case("correct", True)
        if s.get("rows") != len(rows) or s.get("oracle_rows") != len(rows) or s.get("input_points") != len(good):
            failures.append("correct-counts")
            print("FAIL correct-counts:", s.get("rows"), s.get("oracle_rows"), s.get("input_points"), len(rows), len(good))
        if s.get("input_invalid_utf8_lines") != 1:
            failures.append("utf8-count")
            print("FAIL utf8-count:", s.get("input_invalid_utf8_lines"))
        case("correct-without-dead-letter-check", True, dead=None, with_log=False)

        def perturbed(i: int, **changes) -> list[dict]:
            rs = [dict(r) for r in rows]
            rs[i].update(changes)
            return rs

        case("sum-off-by-1e-6", False, rows=perturbed(3, sum=rows[3]["sum"] * (1 + 1e-6)))
        case("avg-off-by-1e-6", False, rows=perturbed(4, avg=rows[4]["avg"] * (1 + 1e-6)))
        case("min-off-by-one-ulp", False, rows=perturbed(2, min=math.nextafter(rows[2]["min"], math.inf)))
        case("max-changed", False, rows=perturbed(2, max=rows[2]["max"] + 1))
        case("count-changed", False, rows=perturbed(1, count=rows[1]["count"] + 1))
        case("sum-within-tolerance", True, rows=perturbed(3, sum=rows[3]["sum"] * (1 + 1e-12)))
        case("row-missing", False, rows=rows[1:])
        case("row-extra", False, rows=rows + [dict(rows[0], host="h99999")])
        case("row-duplicated", False, rows=rows + [dict(rows[0])])
        case("tenant-changed", False, rows=perturbed(0, tenant="t9"))
        case("wrong-hour-partition", False,
             rows=perturbed(0, _partition=partition_of(rows[0]["window_start"] + 3_600_000)))
        case("window-end-wrong", False, rows=perturbed(0, window_end=rows[0]["window_end"] + 1))
        case("timestamps-without-time-zone", False, time_type=pa.timestamp("ms"))
        case("timestamps-in-microseconds", False, time_type=pa.timestamp("us", tz="UTC"))
        case("dead-letter-missing", False, dead=bad[1:])
        case("dead-letter-extra", False, dead=bad + [{"line": 2, "kind": "late", "raw": b"x"}])
        case("dead-letter-wrong-raw", False, dead=[dict(b, raw=b"nope") if i == 0 else b for i, b in enumerate(bad)])
        case("dead-letters-absent", False, dead=None)
        case("table-absent", False, rows=[])

    print("all cases behave" if not failures else f"{len(failures)} failing: {failures}")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
