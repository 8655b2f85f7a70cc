#!/usr/bin/env python3
"""Writes the hostile-input corpus next to this script (the files are committed; this records
how the large and binary ones were made). Run with the project's venv python (pyarrow):
    ~/.cache/alertflow/venv/bin/python tests/corpus/generate.py
What each file must produce is in MANIFEST.toml; engine/tests/hostile.rs checks it."""
import os

import pyarrow as pa
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))
T = 1767225600000  # 2026-01-01T00:00:00Z


def write(name, data):
    path = os.path.join(HERE, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def ok(i, **extra):
    fields = {"ts": T + i * 1000, "name": "cpu", "value": i, "host": "h1"}
    fields.update(extra)
    return "{" + ",".join(f'"{k}":{v if not isinstance(v, str) else chr(34) + v + chr(34)}' for k, v in fields.items()) + "}"


# A line of 1 MiB + 100 bytes (over the 1 MiB limit) between good lines; and one just under.
big = '{"ts":%d,"name":"cpu","value":1,"host":"%s"}' % (T + 1000, "x" * ((1 << 20) + 100))
under = '{"ts":%d,"name":"cpu","value":1,"host":"%s"}' % (T + 2000, "y" * ((1 << 20) - 100))
write("metrics/long_line.ndjson", "\n".join([ok(0), big, under, ok(3)]) + "\n")

# 10,000 labels on one record (the limit is 512), between good lines.
labels = ",".join(f'"l{i}":"v"' for i in range(10_000))
write("metrics/many_labels.ndjson", "\n".join([ok(0), '{"ts":%d,"name":"cpu","value":1,%s}' % (T + 1000, labels), ok(2)]) + "\n")
write(
    "alerts/many_labels.ndjson",
    "\n".join(
        [
            '{"ts":%d,"alertname":"A","status":"firing","host":"h1"}' % T,
            '{"ts":%d,"alertname":"B","status":"firing",%s}' % (T + 1000, labels),
            '{"ts":%d,"alertname":"C","status":"firing","host":"h1"}' % (T + 2000),
        ]
    )
    + "\n",
)

# JSON nested 100,000 deep, in a label and in annotations (skipped values must not recurse
# without bound).
deep = "[" * 100_000 + "]" * 100_000
deep_obj = '{"a":' * 100_000 + "1" + "}" * 100_000
write(
    "metrics/deep_nesting.ndjson",
    "\n".join(
        [
            ok(0),
            '{"ts":%d,"name":"cpu","value":1,"host":%s}' % (T + 1000, deep),
            '{"ts":%d,"name":"cpu","value":1,"annotations":%s}' % (T + 2000, deep_obj),
            '{"ts":%d,"name":"cpu","value":1,"host":"h1",' % (T + 3000) + "[" * 100_000,
            ok(4),
        ]
    )
    + "\n",
)

# Invalid UTF-8: a lone continuation byte, a truncated sequence, an overlong encoding, a
# surrogate encoded in UTF-8, and bytes that are not UTF-8 at all; good lines around them.
write(
    "metrics/invalid_utf8.ndjson",
    b"\n".join(
        [
            ok(0).encode(),
            b'{"ts":%d,"name":"cpu","value":1,"host":"\x80"}' % (T + 1000),
            b'{"ts":%d,"name":"cpu","value":1,"host":"h\xe2\x82"}' % (T + 2000),
            b'{"ts":%d,"name":"cpu","value":1,"host":"\xc0\xaf"}' % (T + 3000),
            b'{"ts":%d,"name":"cpu","value":1,"host":"\xed\xa0\x80"}' % (T + 4000),
            b'{"ts":%d,"name":"\xff\xfe\xfd","value":1}' % (T + 5000),
            ok(6, host="h\u00e9\u4e2d").encode(),
        ]
    )
    + b"\n",
)

# NUL bytes and other control characters, raw, inside and outside strings.
write(
    "metrics/control_bytes.ndjson",
    b"\n".join(
        [
            ok(0).encode(),
            b'{"ts":%d,"name":"cpu","value":1,"host":"a\x00b"}' % (T + 1000),
            b'\x00\x00\x00\x00',
            b'{"ts":%d,\x00"name":"cpu","value":1}' % (T + 3000),
            b'{"ts":%d,"name":"cpu","value":1,"host":"tab\there"}' % (T + 4000),
            ok(5, host="esc\\u0000aped").encode(),
        ]
    )
    + b"\n",
)

# A metrics file as Parquet cut in half (its footer lost), and one that is not Parquet at all.
table = pa.table(
    {
        "ts": pa.array([T + i * 1000 for i in range(2000)], pa.int64()),
        "name": ["cpu"] * 2000,
        "value": [float(i) for i in range(2000)],
        "host": [f"h{i % 10}" for i in range(2000)],
    }
)
path = os.path.join(HERE, "metrics/whole.parquet.tmp")
pq.write_table(table, path, row_group_size=500)
data = open(path, "rb").read()
os.remove(path)
write("metrics/truncated.parquet", data[: len(data) // 2])
write("metrics/not_parquet.parquet", "ts,name,value\n1767225600000,cpu,1\n")

# Parquet rows with bad values: NaN, infinities, a null name, times in 1970 and 2300.
write_rows = pa.table(
    {
        "ts": pa.array([T, T + 1000, T + 2000, T + 3000, 0, 10413792000000, 1767225604, T + 7000], pa.int64()),
        "name": ["cpu", "cpu", "cpu", None, "cpu", "cpu", "cpu", "cpu"],
        "value": [1.0, float("nan"), float("inf"), 4.0, 5.0, 6.0, 7.0, float("-inf")],
        "host": ["h1"] * 8,
    }
)
pq.write_table(write_rows, os.path.join(HERE, "metrics/bad_values.parquet"))

write("metrics/empty.ndjson", b"")
write("metrics/empty.csv", b"")
write("alerts/empty.json", b"")
