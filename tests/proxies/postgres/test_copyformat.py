"""COPY option reading and row masking, without a server (the real server is in
test_result_wall.py)."""

from __future__ import annotations

import csv
import io
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from interlock.proxies.postgres.copyformat import (
    BINARY_SIGNATURE,
    CopyFormat,
    CopyMasker,
    _csv_fields,
    copy_format,
)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("COPY t (a, b) TO STDOUT", CopyFormat()),
        ("copy t to stdout with (format csv)", CopyFormat(csv=True, delimiter=b",", null=b"")),
        (
            "COPY (select 1) TO STDOUT WITH (FORMAT csv, HEADER true, DELIMITER ';')",
            CopyFormat(csv=True, delimiter=b";", null=b"", header=True),
        ),
        (
            "COPY t TO STDOUT CSV HEADER",
            CopyFormat(csv=True, delimiter=b",", null=b"", header=True),
        ),
        (
            "COPY t TO STDOUT WITH DELIMITER AS '|' NULL AS 'x'",
            CopyFormat(delimiter=b"|", null=b"x"),
        ),
        ("COPY t TO STDOUT (FORMAT binary)", CopyFormat(delimiter=b"", null=b"")),
        ("COPY t TO STDOUT BINARY", CopyFormat(delimiter=b"", null=b"")),
        (
            "COPY t TO STDOUT (FORMAT csv, FORCE_QUOTE (a, b), QUOTE '''')",
            CopyFormat(csv=True, delimiter=b",", null=b"", quote=b"'", escape=b"'"),
        ),
    ],
)
def test_options_are_read(sql: str, expected: CopyFormat) -> None:
    assert copy_format(sql) == expected


@pytest.mark.parametrize(
    "sql",
    [
        "COPY t TO STDOUT (FORMAT csv, ENCODING 'LATIN1')",
        "COPY t TO STDOUT (DELIMITER E'\\t')",
        "COPY t TO STDOUT (DELIMITER '||')",
        "COPY t TO STDOUT (FORMAT xml)",
        "COPY t TO STDOUT (FORMAT csv, FORMAT text)",
        "COPY t TO STDOUT (FORMAT csv",
        "COPY t TO STDOUT WITH SOMETHING",
        "COPY (select 'to stdout') TO STDOUT",
        "COPY t TO STDOUT (DELIMITER '\\')",
        "COPY t TO '/tmp/x'",
    ],
)
def test_options_not_understood_are_none(sql: str) -> None:
    assert copy_format(sql) is None


field_text = st.text(alphabet=st.sampled_from("ab,;\"'\n\r\t\\x "), max_size=8)
rows = st.lists(st.one_of(st.none(), field_text), min_size=1, max_size=5)


def pg_csv_row(values: list[str | None], fmt: CopyFormat) -> bytes:
    """A row as PostgreSQL's CSV output writes it (quoted when needed, NULL unquoted)."""
    q, d = fmt.quote.decode(), fmt.delimiter.decode()
    out = []
    for v in values:
        if v is None:
            out.append(fmt.null.decode())
            continue
        needs = v == fmt.null.decode() or any(c in v for c in (q, d, "\n", "\r")) or v == ""
        out.append(q + v.replace(q, q + q) + q if needs else v)
    return (d.join(out) + "\n").encode()


@settings(max_examples=300, deadline=None)
@given(rows, st.data())
def test_csv_masking_keeps_other_fields_and_nulls_masked_ones(
    values: list[str | None], data: st.DataObject
) -> None:
    fmt = CopyFormat(csv=True, delimiter=b",", null=b"")
    mask = frozenset(data.draw(st.sets(st.integers(0, len(values) - 1))))
    masker = CopyMasker(fmt, False, len(values), mask)
    out = masker.data(pg_csv_row(values, fmt)).decode()
    # (csv reads an empty line as no field at all; PostgreSQL wrote one NULL there)
    parsed = next(csv.reader(io.StringIO(out), quotechar='"', delimiter=","), None) or [""]
    raw = _csv_fields(out.encode().rstrip(b"\n"), fmt)
    assert raw is not None
    assert len(parsed) == len(raw) == len(values)
    for i, v in enumerate(values):
        if i in mask:
            assert raw[i] == b"", "CSV's NULL: an empty unquoted field"
        elif v is not None:
            assert parsed[i] == v


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.binary(max_size=6)), min_size=1, max_size=5), st.data())
def test_binary_masking_nulls_masked_fields(
    values: list[bytes | None], data: st.DataObject
) -> None:
    mask = frozenset(data.draw(st.sets(st.integers(0, len(values) - 1))))
    header = BINARY_SIGNATURE + struct.pack("!II", 0, 0)
    tup = struct.pack("!h", len(values)) + b"".join(
        struct.pack("!i", -1) if v is None else struct.pack("!i", len(v)) + v for v in values
    )
    masker = CopyMasker(CopyFormat(), True, len(values), mask)
    out = masker.data(header + tup)
    assert out.startswith(header)
    pos = len(header) + 2
    for i, v in enumerate(values):
        (size,) = struct.unpack_from("!i", out, pos)
        pos += 4
        if i in mask or v is None:
            assert size == -1
        else:
            assert out[pos : pos + size] == v
            pos += size
    assert masker.data(struct.pack("!h", -1)) == struct.pack("!h", -1), "the trailer passes"


@pytest.mark.parametrize(
    ("fmt", "body"),
    [
        (CopyFormat(), b"1\t2\t3\n"),
        (CopyFormat(), b"only-one\n"),
        (CopyFormat(csv=True, delimiter=b",", null=b""), b'"unterminated,x\n'),
        (CopyFormat(csv=True, delimiter=b",", null=b""), b'a,b"c\n'),
        (CopyFormat(csv=True, delimiter=b",", null=b""), b'"a"b,c\n'),
    ],
)
def test_a_row_that_does_not_split_as_expected_is_masked_whole(
    fmt: CopyFormat, body: bytes
) -> None:
    out = CopyMasker(fmt, False, 2, frozenset({1})).data(body)
    assert out == fmt.null + fmt.delimiter + fmt.null + b"\n"


def test_a_truncated_binary_tuple_is_replaced_by_nulls() -> None:
    masker = CopyMasker(CopyFormat(), True, 2, frozenset({1}))
    header = BINARY_SIGNATURE + struct.pack("!II", 0, 0)
    out = masker.data(header + struct.pack("!hi", 2, 50) + b"short")
    assert out == header + struct.pack("!hii", 2, -1, -1)
