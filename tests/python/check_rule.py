"""Independent check of a [[rule]]: recomputes its alerts from the raw NDJSON points with plain
Python (per-minute windows per host, Prometheus "for" semantics over window ends, a missing
window does not hold) and compares them with the alerts table read by DuckDB from the Parquet
files alertflow wrote.

usage: check_rule.py POINTS.ndjson OUT_DIR ALERTNAME METRIC THRESHOLD MIN_COUNT FOR_MS
Prints the number of alert events compared; exits 1 with the differences otherwise.
"""
import json
import sys
from collections import defaultdict

import duckdb

points, out, alertname, metric = sys.argv[1:5]
threshold, min_count, for_ms = float(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
STEP = 60_000

windows = defaultdict(lambda: [0, 0.0])  # (tenant, host, end) -> [count, sum]
with open(points) as f:
    for line in f:
        p = json.loads(line)
        if p["name"] != metric:
            continue
        end = p["ts"] - p["ts"] % STEP + STEP
        w = windows[(p.get("tenant", "default"), p["host"], end)]
        w[0] += 1
        w[1] += p["value"]

by_group = defaultdict(dict)
for (tenant, host, end), (c, s) in windows.items():
    by_group[(tenant, host)][end] = (c, s / c)

expected = set()  # (tenant, host, event, starts_at, ts)
for (tenant, host), ws in by_group.items():
    since, firing = None, False
    end, last = min(ws), max(ws)
    while end <= last + STEP:
        w = ws.get(end)
        holds = w is not None and w[1] > threshold and w[0] >= min_count
        if holds:
            if since is None:
                since = end
            if not firing and end - since >= for_ms:
                firing = True
                expected.add((tenant, host, "opened", since, end))
        else:
            if firing:
                expected.add((tenant, host, "resolved", since, end))
            since, firing = None, False
        end += STEP

con = duckdb.connect()
rows = con.execute(
    f"""SELECT tenant, json_extract_string(labels, '$.host'), event,
               epoch_ms(starts_at), epoch_ms(ts)
        FROM read_parquet('{out}/alerts/**/*.parquet', hive_partitioning = true)
        WHERE alertname = ? AND event IN ('opened', 'resolved')""",
    [alertname],
).fetchall()
got = set(rows)
if len(rows) != len(got):
    sys.exit(f"duplicate alert rows: {len(rows)} rows, {len(got)} distinct")
if got != expected:
    print("only alertflow:", sorted(got - expected)[:10])
    print("only the reference:", sorted(expected - got)[:10])
    sys.exit(1)
print(len(got))
