"""Property tests of interaction-log loading (``recsys.data``): generated parquet logs, clean or with one defect.

* A valid log (ids of any integer width incl. negative and ±2**63 extremes, or any Unicode string; duplicates;
  optional integer or datetime timestamps, ratings, weights, propensities; extra columns of other types; any row
  group size) validates to the summary computed here from the generated rows, and ``clean_log`` / ``Vocabulary``
  / ``encode_interactions`` give back exactly those rows, counts and ids.
* One defect (null ids, NaN / ±inf / null numbers, an id column of a non-id type, a missing column, zero rows,
  duplicate column names, a non-numeric rating, a non-integer timestamp, propensities outside (0, 1], uint64 ids or
  timestamps beyond int64, ids ending in NUL) raises :class:`~recsys.data.LogSchemaError` naming the file and the
  column, and the first offending row where there is one.
* Damaged bytes (empty file, truncation, random bytes, flipped bytes in a valid file) give a summary or a
  ``LogSchemaError`` naming the file; never a polars / pyarrow exception, a crash or an abort.
"""

from __future__ import annotations

import math
import random
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from fuzz_support import FUZZ
from hypothesis import example, given
from hypothesis import strategies as st

from recsys.data import LogSchemaError, Vocabulary, clean_log, encode_interactions, scan_log, validate_log

INT64 = (-(2**63), 2**63 - 1)
ID_TYPES = {
    "int64": (pa.int64(), st.integers(*INT64)),
    "int32": (pa.int32(), st.integers(-(2**31), 2**31 - 1)),
    "int8": (pa.int8(), st.integers(-128, 127)),
    "uint64": (pa.uint64(), st.integers(0, INT64[1])),
    "uint16": (pa.uint16(), st.integers(0, 2**16 - 1)),
    # any text but a trailing NUL (refused: numpy would merge "a\0" with "a"; see the defect test)
    "string": (pa.string(), st.text(max_size=6).filter(lambda s: not s.endswith("\x00"))),
    "large_string": (pa.large_string(), st.text(max_size=6).filter(lambda s: not s.endswith("\x00"))),
}
finite = st.floats(-1e12, 1e12, allow_nan=False)


@dataclass
class Log:
    users: list
    items: list
    user_type: str
    item_type: str
    timestamps: list[int] | None
    datetime_timestamps: bool
    ratings: list[float] | None
    weights: list[float] | None
    propensities: list[float] | None
    extra: bool
    row_group_size: int

    def table(self) -> pa.Table:
        columns = {
            "user_id": pa.array(self.users, ID_TYPES[self.user_type][0]),
            "item_id": pa.array(self.items, ID_TYPES[self.item_type][0]),
        }
        if self.timestamps is not None:
            kind = pa.timestamp("s") if self.datetime_timestamps else pa.int64()
            columns["timestamp"] = pa.array(self.timestamps, kind)
        for name, values, kind in (("rating", self.ratings, pa.float64()), ("weight", self.weights, pa.float32()),
                                   ("propensity", self.propensities, pa.float64())):
            if values is not None:
                columns[name] = pa.array(values, kind)
        if self.extra:  # columns the schema does not know are carried along, whatever their type
            columns["tags"] = pa.array([[i, None] for i in range(len(self.users))], pa.list_(pa.int8()))
            columns["note"] = pa.array([None] * len(self.users), pa.string())
        return pa.table(columns)

    def write(self, path: Path) -> Path:
        pq.write_table(self.table(), path, row_group_size=self.row_group_size)
        return path


@st.composite
def logs(draw: st.DrawFn, min_rows: int = 1) -> Log:
    rows = draw(st.integers(min_rows, 25))
    user_type, item_type = draw(st.sampled_from(sorted(ID_TYPES))), draw(st.sampled_from(sorted(ID_TYPES)))
    # small pools of ids, so that repeated users, items and whole rows are common
    user_pool = draw(st.lists(ID_TYPES[user_type][1], min_size=1, max_size=5, unique=True))
    item_pool = draw(st.lists(ID_TYPES[item_type][1], min_size=1, max_size=5, unique=True))
    timestamps = draw(st.one_of(st.none(), st.lists(st.integers(-(10**10), 10**10), min_size=rows, max_size=rows)))
    return Log(
        users=[draw(st.sampled_from(user_pool)) for _ in range(rows)],
        items=[draw(st.sampled_from(item_pool)) for _ in range(rows)],
        user_type=user_type,
        item_type=item_type,
        timestamps=timestamps,
        datetime_timestamps=draw(st.booleans()),
        ratings=draw(st.one_of(st.none(), st.lists(finite, min_size=rows, max_size=rows))),
        weights=draw(st.one_of(st.none(), st.lists(st.floats(0, 1e6, width=32), min_size=rows, max_size=rows))),
        propensities=draw(st.one_of(st.none(), st.lists(st.floats(1e-6, 1.0), min_size=rows, max_size=rows))),
        extra=draw(st.booleans()),
        row_group_size=draw(st.integers(1, 30)),
    )


@FUZZ
@given(log=logs())
@example(log=Log([2**63 - 1, -(2**63)], ["a", "a"], "int64", "string", [0, 0], False, None, None, None, False, 1))
def test_valid_logs_load_to_the_generated_rows(log: Log) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = log.write(Path(tmp) / "log.parquet")
        summary = validate_log(path)
        deduplicated = clean_log(path).collect()
        kept = clean_log(path, duplicates="keep").collect()
        users = Vocabulary.from_log(scan_log(path), "user_id")
        items = Vocabulary.from_log(scan_log(path), "item_id")
        encoded = encode_interactions(path, users, items)
        pairs = list(zip(log.users, log.items, strict=True))
        if len(set(pairs)) < len(pairs):
            try:
                clean_log(path, duplicates="error")
            except LogSchemaError as err:
                assert str(path) in str(err) and f"{len(pairs) - len(set(pairs))} duplicate" in str(err)
            else:
                raise AssertionError("duplicates='error' accepted duplicate pairs")
    keys = list(zip(log.users, log.items, log.timestamps or [None] * len(pairs), strict=True))
    assert (summary.rows, summary.users, summary.items) == (len(pairs), len(set(log.users)), len(set(log.items)))
    assert summary.duplicate_rows == len(keys) - len(set(keys))
    assert (summary.time_min, summary.time_max) == (
        (min(log.timestamps), max(log.timestamps)) if log.timestamps else (None, None)
    )
    assert summary.nulls == {name: len(pairs) if name == "note" else 0 for name in log.table().column_names}
    assert list(zip(kept["user_id"], kept["item_id"], strict=True)) == pairs
    assert list(zip(deduplicated["user_id"], deduplicated["item_id"], strict=True)) == list(dict.fromkeys(pairs))
    assert dict(zip(users.ids.tolist(), users.counts.tolist(), strict=True)) == Counter(log.users)
    assert dict(zip(items.ids.tolist(), items.counts.tolist(), strict=True)) == Counter(log.items)
    assert users.decode(encoded.users).tolist() == log.users
    assert items.decode(encoded.items).tolist() == log.items
    if log.timestamps is not None:
        assert encoded.timestamps.tolist() == log.timestamps


# ---------------------------------------------------------------------------------------------------------------
# One defect per log
# ---------------------------------------------------------------------------------------------------------------

DEFECTS = (
    "null_id", "bad_number", "id_type", "missing_column", "zero_rows", "duplicate_columns", "rating_type",
    "timestamp_type", "propensity_range", "uint64_id_overflow", "uint64_timestamp_overflow", "nul_suffix_id",
)
NON_ID_TYPES = [
    pa.array([1.5], pa.float64()), pa.array([True]), pa.array([b"x"], pa.binary()), pa.array([0], pa.date32()),
    pa.array([[1]], pa.list_(pa.int64())), pa.array(["a"]).dictionary_encode(), pa.array([None], pa.null()),
    pa.array([1.5], pa.float16()),
]


def _damage(log: Log, defect: str, rows: list[int], rng: random.Random) -> tuple[pa.Table, str, str, int | None]:
    """Return (table, column the error must name, message fragment, first bad row or None)."""
    table = log.table()
    n = table.num_rows
    rows = sorted({r % n for r in rows})
    column = rng.choice(["user_id", "item_id"])

    def replace(name: str, values: list, kind: pa.DataType) -> pa.Table:
        array = pa.array(values, kind)
        if name in table.column_names:
            return table.set_column(table.column_names.index(name), name, array)
        return table.append_column(name, array)

    if defect == "null_id":
        values = [None if r in rows else v for r, v in enumerate(table[column].to_pylist())]
        return replace(column, values, table[column].type), column, f"has {len(rows)} null ids", rows[0]
    if defect == "bad_number":
        name = rng.choice(["rating", "weight", "propensity"])
        good = 0.5
        values = [rng.choice([math.nan, math.inf, -math.inf, None]) if r in rows else good for r in range(n)]
        return replace(name, values, pa.float64()), name, f"has {len(rows)} null/NaN", rows[0]
    if defect == "id_type":
        array = rng.choice(NON_ID_TYPES)
        array = pa.concat_arrays([array] * n) if n else array.slice(0, 0)
        return replace(column, array.to_pylist(), array.type).set_column(
            table.column_names.index(column), column, array), column, "must be integer or string", None
    if defect == "missing_column":
        return table.drop_columns([column]), column, f"missing required column `{column}`", None
    if defect == "zero_rows":
        return table.slice(0, 0), "", "the log has no rows", None
    if defect == "duplicate_columns":
        return table.append_column(column, table[column]), column, "duplicate column names", None
    if defect == "rating_type":
        array = rng.choice([pa.array(["5"] * n), pa.array([True] * n), pa.array([b"5"] * n, pa.binary())])
        return replace("rating", array.to_pylist(), array.type), "rating", "must be numeric", None
    if defect == "timestamp_type":
        array = rng.choice([pa.array(["2024-01-01"] * n), pa.array([1.5] * n), pa.array([False] * n)])
        return replace("timestamp", array.to_pylist(), array.type), "timestamp", "must be integer seconds", None
    if defect == "propensity_range":
        values = [rng.choice([0.0, -0.5, 1.5, 1e300]) if r in rows else 0.5 for r in range(n)]
        return replace("propensity", values, pa.float64()), "propensity", f"{len(rows)} rows do not", rows[0]
    if defect == "uint64_id_overflow":
        values = [2**63 + r if r in rows else r for r in range(n)]
        return replace(column, values, pa.uint64()), column, f"has {len(rows)} ids above 2**63 - 1", rows[0]
    if defect == "uint64_timestamp_overflow":
        values = [2**64 - 1 if r in rows else r for r in range(n)]
        return replace("timestamp", values, pa.uint64()), "timestamp", "could not read the log's rows", None
    assert defect == "nul_suffix_id"
    values = [f"id{r}\x00" if r in rows else f"id{r}" for r in range(n)]
    return replace(column, values, pa.string()), column, f"has {len(rows)} ids ending in NUL", rows[0]


def _training_path(path: Path) -> None:
    """What ``regkit recsys`` does with a log: clean it, build both vocabularies, encode it (every row kept)."""
    cleaned = clean_log(path, duplicates="keep")
    users, items = Vocabulary.from_log(cleaned, "user_id"), Vocabulary.from_log(cleaned, "item_id")
    encode_interactions(cleaned, users, items, where=str(path))


# defects that only validate_log looks at (training reads user_id, item_id, timestamp and rating)
VALIDATION_ONLY = ("propensity_range",)


@FUZZ
@given(log=logs(), defect=st.sampled_from(DEFECTS), rows=st.lists(st.integers(0, 30), min_size=1, max_size=4),
       rng=st.randoms(use_true_random=False))
def test_one_defect_names_the_file_column_and_row(log: Log, defect: str, rows: list[int], rng: random.Random) -> None:
    table, column, fragment, first_row = _damage(log, defect, rows, rng)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "log.parquet"
        pq.write_table(table, path, row_group_size=log.row_group_size)
        steps = {"validate_log": lambda: validate_log(path), "training path": lambda: _training_path(path)}
        for name, step in steps.items():
            skipped = defect in VALIDATION_ONLY or defect == "bad_number" and column != "rating"
            if name == "training path" and skipped:
                step()  # training does not read propensities or weights: it must go through
                continue
            try:
                step()
            except ValueError as err:  # LogSchemaError is a ValueError
                error = err
            else:
                raise AssertionError(f"{name} accepted {defect}")
            message = str(error)
            assert isinstance(error, LogSchemaError), f"{name}: {type(error).__name__}: {message}"
            assert message.startswith(f"{path}: "), message
            if defect == "bad_number":  # validate_log: "null/NaN/infinite values"; clean_log: "NaN/null values"
                fragment = fragment.replace("null/NaN", "null/NaN" if name == "validate_log" else "NaN/null")
            if name == "validate_log" or defect != "uint64_timestamp_overflow":
                assert fragment in message, f"{name}, {defect}: expected {fragment!r} in {message!r}"
            assert column in message, f"{name}, {defect}: message does not name column {column!r}: {message!r}"
            if first_row is not None:
                assert f"first at row {first_row})" in message, f"{name}, {defect}: wrong first row: {message!r}"


for _defect in DEFECTS:  # every defect at least once, whatever the random draws cover
    test_one_defect_names_the_file_column_and_row = example(
        log=Log([1, 2, 3], ["a", "b", "b"], "int64", "string", [5, 6, 7], False, [1.0, 2.0, 3.0], None, None,
                False, 2),
        defect=_defect, rows=[1, 2], rng=random.Random(0),
    )(test_one_defect_names_the_file_column_and_row)


# ---------------------------------------------------------------------------------------------------------------
# Damaged bytes
# ---------------------------------------------------------------------------------------------------------------


@st.composite
def damaged_files(draw: st.DrawFn) -> bytes:
    log = draw(logs())
    with tempfile.TemporaryDirectory() as tmp:
        data = log.write(Path(tmp) / "log.parquet").read_bytes()
    kind = draw(st.sampled_from(["empty", "truncated", "random", "flipped", "overwritten"]))
    if kind == "empty":
        return b""
    if kind == "truncated":
        return data[: draw(st.integers(0, len(data) - 1))]
    if kind == "random":
        return draw(st.binary(max_size=300)) + draw(st.sampled_from([b"", b"PAR1"]))
    damaged = bytearray(data)
    if kind == "flipped":
        for _ in range(draw(st.integers(1, 4))):
            damaged[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    else:
        start = draw(st.integers(0, len(data) - 1))
        damaged[start : start + 16] = draw(st.binary(min_size=16, max_size=16))[: len(data) - start]
    return bytes(damaged)


@FUZZ
@given(content=damaged_files())
@example(content=b"")  # an empty file
def test_damaged_bytes_give_a_summary_or_a_log_schema_error(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "log.parquet"
        path.write_bytes(content)
        try:
            summary = validate_log(path)
        except LogSchemaError as err:
            assert str(err).startswith(f"{path}: "), str(err)
            return
        assert summary.rows >= 1 and summary.users >= 1 and summary.items >= 1
        # what validate_log accepted, the training path reads without a foreign exception
        users = Vocabulary.from_log(scan_log(path), "user_id")
        items = Vocabulary.from_log(scan_log(path), "item_id")
        assert len(encode_interactions(clean_log(path, duplicates="keep"), users, items)) == summary.rows
