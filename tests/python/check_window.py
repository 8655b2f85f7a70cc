#!/usr/bin/env python3
"""Independent oracle of a tumbling-window aggregate written by alertflow.

    check_window.py INPUT_NDJSON OUT_DIR TABLE [--window-ms 60000] [--group-by host]
                    [--where SQL] [--dead-letters EXPECTED_JSONL]

Recomputes, with DuckDB and nothing of alertflow, the aggregate of the metric points of
INPUT_NDJSON per (window, tenant, name, group-by labels): count, sum, min, max, avg. Then reads
the engine's Parquet table OUT_DIR/TABLE (Hive layout date=YYYY-MM-DD/hour=HH) twice, with
DuckDB and with pyarrow.dataset, and checks:

- both readers see the same rows (partition columns included);
- window_start / window_end are timestamps with time zone UTC (DuckDB: TIMESTAMP WITH TIME
  ZONE; pyarrow: timestamp[ms, tz=UTC]) and window_end - window_start = the window;
- the partition columns `date` and `hour` exist and equal the UTC date and hour of window_start;
- one row per group (the latest `revision` when that column exists), as many rows as the
  oracle's, with count / min / max equal exactly and sum / avg equal within 1e-9 relative
  (1e-9 absolute near 0) — only the aggregates present among these five are compared.

With --dead-letters EXPECTED_JSONL (the `alertflow gen metrics --malformed-log` file, one
{"line": N, "kind": K} per line), also reads OUT_DIR/dead_letters (Hive `source=…`; columns
file, line, reason, raw, ts), keeps the rows whose `file` has INPUT_NDJSON's base name, and
checks the set of their line numbers equals the log's, every reason is a non-empty string,
and `raw` is the line's bytes (at most 4 KiB).

Prints one JSON summary on stdout: {"ok", "rows", "oracle_rows", "mismatches", "examples",
…} and exits 0 only when everything holds (1 otherwise, 2 on bad arguments).

Which input lines count (the engine's NDJSON rules, DESIGN §2): a line is a point when it is
valid UTF-8, parses as a JSON object, and has a numeric finite `value`, an integer `ts` (an
integral JSON float is accepted too) within [0, 9999-12-31], a string `name`, and a string
`tenant` or none (then "default"). Label values are strings, or the JSON text of numbers and
booleans; a missing or null label is NULL. Not modelled (never produced by the generator):
RFC 3339 string times, duplicate keys, nested objects in other fields (dead letters in the
engine), and the exact text of numeric labels (DuckDB re-prints 1.50 as 1.5; the engine keeps
the JSON text). Late records are not modelled either: run the pipeline with an allowed
out-of-orderness of at least twice the generator's --disorder, or none are late.
"""

from __future__ import annotations

import argparse
import codecs
import json
import os
import sys
import tempfile

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds

AGGREGATES = ["count", "sum", "min", "max", "avg"]
EXACT = {"count", "min", "max"}
MAX_EVENT_TIME = 253_402_300_799_999
MAX_RAW_BYTES = 4096
MAX_EXAMPLES = 10


def sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def ident(s: str) -> str:
    return '"' + s.replace('"', '""') + '"'


def json_path(*keys: str) -> str:
    """The SQL literal of the JSON path `$."k1"."k2"…`."""
    return sql_str("$" + "".join('."' + k.replace('"', '\\"') + '"' for k in keys))


def utf8_clean_input(path: str, tmpdir: str) -> tuple[str, int]:
    """Returns (a path DuckDB can read, number of lines dropped for invalid UTF-8).

    DuckDB's JSON reader behaviour on invalid UTF-8 has changed across versions (error, NULL
    row, or accepted as-is), so lines that are not valid UTF-8 are removed here, in bulk: the
    whole file is decoded; on an error, the offending line is cut out and decoding resumes
    after it (total work linear in the file size). The file is only copied when it has such
    lines.
    """
    with open(path, "rb") as f:
        data = f.read()
    view = memoryview(data)
    pos, dropped, chunks = 0, 0, []
    while True:
        try:
            codecs.utf_8_decode(view[pos:], "strict", True)
            break
        except UnicodeDecodeError as e:
            bad = pos + e.start
            line_start = data.rfind(b"\n", 0, bad) + 1
            line_end = data.find(b"\n", bad)
            chunks.append(view[pos:line_start])
            dropped += 1
            if line_end < 0:
                pos = len(data)
                break
            pos = line_end + 1
    if dropped == 0:
        return path, 0
    chunks.append(view[pos:])
    clean = os.path.join(tmpdir, "input.utf8.ndjson")
    with open(clean, "wb") as f:
        for c in chunks:
            f.write(c)
    return clean, dropped


def load_points(con, path: str, labels: list[str], where: str | None) -> None:
    """Creates the table `points(ts, tenant, name, value, <labels>)` of the valid input points.

    Robust reading: `read_ndjson_objects(..., ignore_errors=true)` yields one JSON value per
    line and NULL (or nothing) for a line that does not parse, so a malformed line can never
    shift or merge with its neighbours. Types are then checked with `json_type` before any
    extraction, and every conversion is a TRY_CAST, so a bad value drops its row instead of
    failing the query (a `"value":"54.5"` string is rejected by its type, not converted).
    """
    label_cols = []
    for lab in labels:
        # A top-level field, else a key of a `labels` object (the engine flattens those).
        top = f"json_extract(j, {json_path(lab)})"
        nested = f"json_extract(j, {json_path('labels', lab)})"
        v = f"coalesce(nullif({top}, 'null'::JSON), {nested})"
        label_cols.append(
            f"CASE json_type({v}) WHEN 'VARCHAR' THEN json_extract_string({v}, '$') "
            f"WHEN 'NULL' THEN NULL ELSE CAST({v} AS VARCHAR) END AS {ident(lab)}"
        )
    labels_sql = "".join(", " + c for c in label_cols)
    con.execute(
        f"""
        CREATE TEMP TABLE parsed AS
        SELECT
            CASE
                WHEN json_type(j, '$.ts') IN ('BIGINT', 'UBIGINT') THEN TRY_CAST(json_extract(j, '$.ts') AS BIGINT)
                WHEN json_type(j, '$.ts') = 'DOUBLE'
                     AND TRY_CAST(json_extract(j, '$.ts') AS DOUBLE) = floor(TRY_CAST(json_extract(j, '$.ts') AS DOUBLE))
                     AND abs(TRY_CAST(json_extract(j, '$.ts') AS DOUBLE)) < 9e15
                    THEN TRY_CAST(TRY_CAST(json_extract(j, '$.ts') AS DOUBLE) AS BIGINT)
            END AS ts,
            CASE json_type(j, '$.tenant')
                WHEN 'VARCHAR' THEN json_extract_string(j, '$.tenant')
                WHEN 'NULL' THEN 'default'
            END AS tenant,
            CASE WHEN json_type(j, '$.tenant') IS NULL OR json_type(j, '$.tenant') IN ('VARCHAR', 'NULL')
                 THEN true ELSE false END AS tenant_ok,
            CASE WHEN json_type(j, '$.name') = 'VARCHAR' THEN json_extract_string(j, '$.name') END AS name,
            CASE WHEN json_type(j, '$.value') IN ('BIGINT', 'UBIGINT', 'DOUBLE')
                 THEN TRY_CAST(json_extract(j, '$.value') AS DOUBLE) END AS value
            {labels_sql}
        FROM (SELECT json AS j FROM read_ndjson_objects({sql_str(path)}, ignore_errors = true))
        WHERE j IS NOT NULL AND json_type(j) = 'OBJECT'
        """
    )
    label_list = "".join(", " + ident(lab) for lab in labels)
    con.execute(
        f"""
        CREATE TEMP TABLE points AS
        SELECT ts, coalesce(tenant, 'default') AS tenant, name, value{label_list}
        FROM parsed
        WHERE ts IS NOT NULL AND ts BETWEEN 0 AND {MAX_EVENT_TIME}
          AND tenant_ok AND name IS NOT NULL
          AND value IS NOT NULL AND isfinite(value)
          {"AND (" + where + ")" if where else ""}
        """
    )


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input", metavar="INPUT_NDJSON")
    ap.add_argument("out_dir", metavar="OUT_DIR")
    ap.add_argument("table", metavar="TABLE")
    ap.add_argument("--window-ms", type=int, default=60_000)
    ap.add_argument("--group-by", action="append", default=None,
                    help="label(s) grouped by besides tenant and name; repeat or comma-separate (default: host; '' for none)")
    ap.add_argument("--where", default=None,
                    help="extra SQL filter on the input points (columns ts, tenant, name, value, labels), e.g. \"name = 'cpu'\"")
    ap.add_argument("--dead-letters", metavar="EXPECTED_JSONL", default=None)
    args = ap.parse_args(argv)
    if args.window_ms <= 0:
        ap.error("--window-ms must be positive")
    raw_groups = args.group_by if args.group_by is not None else ["host"]
    groups = [g.strip() for item in raw_groups for g in item.split(",") if g.strip()]
    if len(set(groups)) != len(groups):
        ap.error("--group-by lists a label twice")
    for g in groups:
        if g in ("date", "hour", "ts", "tenant", "name", "value"):
            ap.error(f"--group-by {g}: not a label")

    summary: dict = {"ok": False, "rows": 0, "oracle_rows": 0, "mismatches": 0, "examples": [], "errors": []}
    try:
        with tempfile.TemporaryDirectory(prefix="check_window.") as tmp:
            check(args, groups, summary, tmp)
    except Exception as e:  # any failure is a failed check, reported in the summary
        summary["errors"].append(f"{type(e).__name__}: {e}")
    summary["ok"] = not summary["errors"] and summary["mismatches"] == 0
    print(json.dumps(summary, indent=None, default=str))
    return 0 if summary["ok"] else 1


def check(args, groups: list[str], summary: dict, tmp: str) -> None:
    errors = summary["errors"]
    w = args.window_ms
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")

    # ---- the oracle -------------------------------------------------------------------------
    clean, dropped_utf8 = utf8_clean_input(args.input, tmp)
    summary["input_invalid_utf8_lines"] = dropped_utf8
    load_points(con, clean, groups, args.where)
    summary["input_points"] = con.execute("SELECT count(*) FROM points").fetchone()[0]
    gcols = "".join(", " + ident(g) for g in groups)
    con.execute(
        f"""
        CREATE TEMP TABLE oracle AS
        SELECT ts - ((ts % {w}) + {w}) % {w} AS ws, tenant, name{gcols},
               count(*)::BIGINT AS "count", sum(value) AS "sum", min(value) AS "min",
               max(value) AS "max", avg(value) AS "avg"
        FROM points
        GROUP BY ALL
        """
    )
    summary["oracle_rows"] = con.execute("SELECT count(*) FROM oracle").fetchone()[0]

    # ---- the engine's table, read by DuckDB -------------------------------------------------
    table_dir = os.path.join(args.out_dir, args.table)
    if not os.path.isdir(table_dir):
        errors.append(f"no table folder {table_dir}")
        return
    glob = os.path.join(table_dir, "**", "*.parquet")
    con.execute(f"CREATE TEMP VIEW engine_duck AS SELECT * FROM read_parquet({sql_str(glob)}, hive_partitioning = true)")
    types = {r[0]: r[1] for r in con.execute("DESCRIBE engine_duck").fetchall()}
    summary["columns"] = types
    required = ["window_start", "window_end", "tenant", "name", *groups, "date", "hour"]
    missing = [c for c in required if c not in types]
    if missing:
        errors.append(f"table {args.table} lacks columns {missing}")
        return
    for c in ("window_start", "window_end"):
        if types[c] != "TIMESTAMP WITH TIME ZONE":
            errors.append(f"DuckDB reads {c} as {types[c]}, not TIMESTAMP WITH TIME ZONE")
    aggs = [a for a in AGGREGATES if a in types]
    summary["aggregates_compared"] = aggs
    if not aggs:
        errors.append(f"table {args.table} has none of the columns {AGGREGATES}")
        return

    # ---- the same table, read by pyarrow ----------------------------------------------------
    pa_table = ds.dataset(table_dir, format="parquet", partitioning="hive").to_table()
    schema = pa_table.schema
    for c in ("window_start", "window_end"):
        if c not in schema.names:
            errors.append(f"pyarrow does not see column {c}")
        elif schema.field(c).type != pa.timestamp("ms", tz="UTC"):
            errors.append(f"pyarrow reads {c} as {schema.field(c).type}, not timestamp[ms, tz=UTC]")
    pa_missing = [c for c in required if c not in schema.names]
    if pa_missing:
        errors.append(f"pyarrow does not see columns {pa_missing}")
        return
    con.register("engine_arrow", pa_table)

    # Same rows in both readers (timestamps as epoch ms, partition values normalized: DuckDB
    # infers DATE / BIGINT for date=… / hour=…, pyarrow string / int32).
    def norm(view: str) -> str:
        cols = ", ".join(
            ["epoch_ms(window_start) AS ws", "epoch_ms(window_end) AS we", "tenant", "name"]
            + [ident(g) for g in groups]
            + [ident(a) for a in aggs]
            + ["CAST(\"date\" AS VARCHAR) AS \"date\"", "CAST(\"hour\" AS INTEGER) AS \"hour\""]
        )
        return f"SELECT {cols} FROM {view}"

    only_duck = con.execute(f"SELECT count(*) FROM ({norm('engine_duck')} EXCEPT ALL {norm('engine_arrow')})").fetchone()[0]
    only_arrow = con.execute(f"SELECT count(*) FROM ({norm('engine_arrow')} EXCEPT ALL {norm('engine_duck')})").fetchone()[0]
    duck_rows = con.execute("SELECT count(*) FROM engine_duck").fetchone()[0]
    summary["rows"] = duck_rows
    summary["pyarrow_rows"] = pa_table.num_rows
    if only_duck or only_arrow or duck_rows != pa_table.num_rows:
        errors.append(
            f"DuckDB and pyarrow disagree: {duck_rows} vs {pa_table.num_rows} rows, "
            f"{only_duck} only in DuckDB's, {only_arrow} only in pyarrow's"
        )

    # Partition columns and window bounds agree with window_start.
    bad_part = con.execute(
        f"""
        SELECT epoch_ms(window_start), CAST("date" AS VARCHAR), CAST("hour" AS INTEGER)
        FROM engine_duck
        WHERE CAST("date" AS VARCHAR) IS DISTINCT FROM strftime(epoch_ms(epoch_ms(window_start)), '%Y-%m-%d')
           OR CAST("hour" AS INTEGER) IS DISTINCT FROM hour(epoch_ms(epoch_ms(window_start)))
        """
    ).fetchall()
    if bad_part:
        errors.append(f"{len(bad_part)} rows whose date/hour partition is not window_start's UTC date/hour, e.g. {bad_part[:3]}")
    bad_bounds = con.execute(
        f"SELECT count(*) FROM engine_duck WHERE epoch_ms(window_end) - epoch_ms(window_start) <> {w} "
        f"OR epoch_ms(window_start) % {w} <> 0"
    ).fetchone()[0]
    if bad_bounds:
        errors.append(f"{bad_bounds} rows whose window is not [k*{w}, (k+1)*{w}) ms")

    # One row per group: the latest revision when the table has corrections.
    key = ["ws", "tenant", "name", *[ident(g) for g in groups]]
    key_sql = ", ".join(key)
    rev = "revision" in types
    agg_sql = ", ".join(ident(a) for a in aggs)
    con.execute(
        f"""
        CREATE TEMP TABLE engine_rows AS
        SELECT epoch_ms(window_start) AS ws, tenant, name{gcols}, {agg_sql}
               {", revision" if rev else ""}
        FROM engine_duck
        """
    )
    dups = con.execute(
        f"SELECT count(*) FROM (SELECT {key_sql}{', revision' if rev else ''} FROM engine_rows "
        f"GROUP BY ALL HAVING count(*) > 1)"
    ).fetchone()[0]
    if dups:
        errors.append(f"{dups} groups appear more than once{' at the same revision' if rev else ''}")
    if rev:
        con.execute(
            f"CREATE TEMP TABLE engine_final AS SELECT * EXCLUDE (revision) FROM engine_rows "
            f"QUALIFY row_number() OVER (PARTITION BY {key_sql} ORDER BY revision DESC) = 1"
        )
    else:
        con.execute("CREATE TEMP TABLE engine_final AS SELECT * FROM engine_rows")
    final_rows = con.execute("SELECT count(*) FROM engine_final").fetchone()[0]
    if final_rows != summary["oracle_rows"]:
        errors.append(f"the table has {final_rows} groups, the oracle {summary['oracle_rows']}")

    # Group by group comparison.
    on = " AND ".join(f"e.{k} IS NOT DISTINCT FROM o.{k}" for k in key)
    conds = []
    for a in aggs:
        ea, oa = f"e.{ident(a)}", f"o.{ident(a)}"
        if a in EXACT:
            conds.append(f"{ea} IS DISTINCT FROM {oa}")
        else:
            conds.append(
                f"({ea} IS NULL OR abs({ea} - {oa}) > greatest(1e-9 * greatest(abs({ea}), abs({oa})), 1e-9))"
            )
    mismatch_where = " OR ".join(["e.ws IS NULL", "o.ws IS NULL", *conds])
    cols = [f"coalesce(e.{k}, o.{k}) AS {k}" for k in key]
    cols += [f"e.{ident(a)} AS {ident('engine_' + a)}" for a in aggs]
    cols += [f"o.{ident(a)} AS {ident('oracle_' + a)}" for a in aggs]
    cols += ["CASE WHEN e.ws IS NULL THEN 'missing in table' WHEN o.ws IS NULL THEN 'not in oracle' ELSE 'values differ' END AS problem"]
    con.execute(
        f"""
        CREATE TEMP TABLE mismatches AS
        SELECT {", ".join(cols)}
        FROM engine_final e FULL OUTER JOIN oracle o ON {on}
        WHERE {mismatch_where}
        """
    )
    summary["mismatches"] = con.execute("SELECT count(*) FROM mismatches").fetchone()[0]
    cur = con.execute(f"SELECT * FROM mismatches ORDER BY ws, tenant, name LIMIT {MAX_EXAMPLES}")
    names = [d[0] for d in cur.description]
    summary["examples"] = [dict(zip(names, r)) for r in cur.fetchall()]
    summary["mismatch_kinds"] = dict(con.execute("SELECT problem, count(*) FROM mismatches GROUP BY ALL ORDER BY ALL").fetchall())

    if args.dead_letters is not None:
        check_dead_letters(con, args, summary)


def check_dead_letters(con, args, summary: dict) -> None:
    errors = summary["errors"]
    dl: dict = {}
    summary["dead_letters"] = dl
    expected: dict[int, str] = {}
    with open(args.dead_letters, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                o = json.loads(line)
                expected[int(o["line"])] = o.get("kind", "?")
    dl["expected"] = len(expected)
    dl_dir = os.path.join(args.out_dir, "dead_letters")
    if not os.path.isdir(dl_dir):
        if expected:
            errors.append(f"no dead_letters table folder {dl_dir}, {len(expected)} dead letters expected")
        dl["rows"] = 0
        return
    glob = os.path.join(dl_dir, "**", "*.parquet")
    con.execute(f"CREATE TEMP VIEW dead_all AS SELECT * FROM read_parquet({sql_str(glob)}, hive_partitioning = true)")
    types = {r[0]: r[1] for r in con.execute("DESCRIBE dead_all").fetchall()}
    dl["columns"] = types
    missing = [c for c in ("source", "file", "line", "reason", "raw", "ts") if c not in types]
    if missing:
        errors.append(f"dead_letters lacks columns {missing}")
        return
    if types["raw"] != "BLOB":
        errors.append(f"dead_letters.raw is {types['raw']}, not binary")
    if types["ts"] != "TIMESTAMP WITH TIME ZONE":
        errors.append(f"dead_letters.ts is {types['ts']}, not TIMESTAMP WITH TIME ZONE")
    base = os.path.basename(args.input)
    rows = con.execute(
        f"""
        SELECT CAST(line AS BIGINT), reason, raw
        FROM dead_all
        WHERE regexp_extract(file, '[^/\\\\]*$') = {sql_str(base)}
        """
    ).fetchall()
    dl["rows"] = len(rows)
    dl["rows_other_files"] = con.execute("SELECT count(*) FROM dead_all").fetchone()[0] - len(rows)
    reasons: dict[str, int] = {}
    got: dict[int, tuple] = {}
    dup = 0
    for line, reason, raw in rows:
        if line in got:
            dup += 1
        got[line] = (reason, raw)
        if not isinstance(reason, str) or not reason.strip():
            errors.append(f"dead letter of line {line} has an empty reason")
        else:
            reasons[reason.split(":")[0][:60]] = reasons.get(reason.split(":")[0][:60], 0) + 1
    dl["reasons"] = reasons
    if dup:
        errors.append(f"{dup} lines are dead letters more than once")
    missing_lines = sorted(set(expected) - set(got))
    extra_lines = sorted(set(got) - set(expected))
    if missing_lines:
        errors.append(f"{len(missing_lines)} malformed lines are not dead letters, e.g. "
                      f"{[(n, expected[n]) for n in missing_lines[:5]]}")
    if extra_lines:
        errors.append(f"{len(extra_lines)} dead letters are not malformed lines, e.g. "
                      f"{[(n, got[n][0]) for n in extra_lines[:5]]}")
    # `raw` holds the line's bytes (without its newline), truncated to 4 KiB.
    with open(args.input, "rb") as f:
        lines = f.read().split(b"\n")
    bad_raw = []
    for n, (_, raw) in got.items():
        want = lines[n - 1][:MAX_RAW_BYTES] if 1 <= n <= len(lines) else None
        if want is not None and want.endswith(b"\r"):
            want_alt = want[:-1]
        else:
            want_alt = want
        if raw is None or bytes(raw) not in (want, want_alt):
            bad_raw.append(n)
    if bad_raw:
        errors.append(f"{len(bad_raw)} dead letters whose raw bytes are not their line's, e.g. lines {sorted(bad_raw)[:5]}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
