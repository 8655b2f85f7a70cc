#!/usr/bin/env python3
"""Independent check of a hopping-window table with DuckDB (no alertflow code involved).

    check_hopping.py INPUT.ndjson OUTPUT_DIR TABLE SIZE_MS SLIDE_MS

Reads the NDJSON input itself, drops the lines alertflow wrote to `dead_letters` (bad or too
late), computes every hopping window per (tenant, name, host) in DuckDB — count, sum, min, max,
avg, last (by ts, then line), stddev_pop, quantile_disc 0.5/0.9/0.95/0.99 — and compares with the
rows of TABLE that have the highest `revision` per window and group (all rows when the table
has no `revision`). Exact for count/min/max/last, 1e-9 relative for sum/avg/stddev, 1 %
relative for the quantiles (the sketch's documented bound). Exit code 0 when all agree.
"""

import json
import os
import sys

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq


def main() -> int:
    inp, out, table, size, slide = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    dead = set()
    dl = os.path.join(out, "dead_letters")
    if any(f.endswith(".parquet") for _, _, fs in os.walk(dl) for f in fs):
        dead = set(pq.read_table(dl, columns=["line"]).column("line").to_pylist())
    rows = []
    with open(inp, "rb") as f:
        for no, line in enumerate(f, start=1):
            if no in dead or not line.strip():
                continue
            p = json.loads(line)
            rows.append((no, p["ts"], p.get("tenant", "default"), p["name"], p.get("host"), float(p["value"])))
    pts = pa.table({k: [r[i] for r in rows] for i, k in enumerate(["line", "ts", "tenant", "name", "host", "value"])})
    con = duckdb.connect()
    con.register("pts", pts)
    want = con.execute(
        f"""
        WITH w AS (
          SELECT *, unnest(generate_series(((ts - {size}) // {slide} + 1) * {slide}, (ts // {slide}) * {slide}, {slide})) AS ws
          FROM pts)
        SELECT ws, tenant, name, host, count(*), sum(value), min(value), max(value), avg(value),
               arg_max(value, CAST(ts AS HUGEINT) * 100000000 + line), stddev_pop(value),
               quantile_disc(value, 0.5), quantile_disc(value, 0.9), quantile_disc(value, 0.95), quantile_disc(value, 0.99)
        FROM w GROUP BY ALL ORDER BY ALL"""
    ).fetchall()
    t = pq.read_table(os.path.join(out, table))
    con.register("got_raw", t)
    rev = "revision" in t.column_names
    got = con.execute(
        f"""
        SELECT epoch_ms(window_start), tenant, name, host, count, sum, min, max, avg, last, stddev, p50, p90, p95, p99,
               epoch_ms(window_end) - epoch_ms(window_start)
        FROM got_raw
        {"QUALIFY revision = max(revision) OVER (PARTITION BY window_start, tenant, name, host)" if rev else ""}
        ORDER BY 1, 2, 3, 4"""
    ).fetchall()
    bad = 0
    if len(got) != len(want):
        print(f"row count: alertflow {len(got)}, DuckDB {len(want)}")
        return 1
    for g, w in zip(got, want):
        if tuple(g[:4]) != tuple(w[:4]) or g[4] != w[4] or g[6] != w[6] or g[7] != w[7] or g[9] != w[9] or g[15] != size:
            print(f"mismatch: alertflow {g}\n          DuckDB    {w}")
            bad += 1
            continue
        for i in (5, 8, 10):
            if abs(g[i] - w[i]) > 1e-9 * max(abs(w[i]), 1.0):
                print(f"column {i} off: alertflow {g[i]}, DuckDB {w[i]} in {w[:4]}")
                bad += 1
        for i in (11, 12, 13, 14):
            if abs(g[i] - w[i]) > 0.01 * abs(w[i]) * (1 + 1e-12) + 1e-9:
                print(f"quantile column {i} off by more than 1 %: alertflow {g[i]}, DuckDB {w[i]} in {w[:4]}")
                bad += 1
    print(f"{len(want)} windows checked against DuckDB, {bad} mismatches, {len(dead)} dead letters excluded")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
