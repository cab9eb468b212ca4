"""Property tests of TREC run files (``retrieval.runs``): reading generated files, and writing arbitrary runs.

* A well-formed run (any mix of spaces / tabs between fields, leading and trailing blanks, CRLF, blank lines, a BOM,
  signed ranks and scores in any decimal notation) reads to exactly ``{qid: {docid: float(score)}}``.
* One defect (a wrong field count, a non-numeric or non-finite score, a non-integer rank, a (qid, docid) pair
  listed twice, non-UTF-8 bytes) raises :class:`~retrieval.runs.RunFormatError` naming the file and the line.
* Arbitrary bytes read to a run or raise ``RunFormatError`` naming the file; never another exception.
* The writer takes any run: it either writes a file that reads back to the run (scores at 6 decimals, trec_eval
  order) or raises ``ValueError`` naming the offending id or score.
"""

from __future__ import annotations

import math
import random
import re
import tempfile
from pathlib import Path

from fuzz_support import FUZZ, assert_names_location, assert_names_some_line, ids
from hypothesis import example, given
from hypothesis import strategies as st

from retrieval.runs import RunFormatError, read_trec_run, write_trec_run

BOM = b"\xef\xbb\xbf"
DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", flags=re.ASCII)


def _score_text(value: float, style: int) -> str:
    """A finite float written the way some tool might (all parse back to the same Python float)."""
    return [repr(value), f"{value:.6f}", f"{value:e}", f"{value:+.3E}", f"{value:.0f}" if abs(value) < 1e15 else
            repr(value)][style]


records = st.lists(
    st.tuples(ids, ids, st.integers(-10, 10**6), st.floats(-1e6, 1e6, allow_nan=False), st.integers(0, 4)),
    min_size=0,
    max_size=12,
    unique_by=lambda r: (r[0], r[1]),
)
separators = st.lists(st.sampled_from([" ", "\t", "  ", " \t "]), min_size=5, max_size=5)


@st.composite
def run_files(draw: st.DrawFn) -> tuple[list[str], dict[str, dict[str, float]]]:
    """Lines of a well-formed run file and the run it holds."""
    lines, expected = [], {}
    for qid, docid, rank, score, style in draw(records):
        text = _score_text(score, style)
        fields = [qid, draw(st.sampled_from(["Q0", "0", "iter"])), docid, draw(st.sampled_from([str(rank), f"+{rank}"]
                  if rank >= 0 else [str(rank)])), text, draw(ids)]
        sep = draw(separators)
        body = "".join(f + s for f, s in zip(fields, [*sep, ""], strict=True))
        lines.append(draw(st.sampled_from(["", " ", "\t"])) + body + draw(st.sampled_from(["", " ", "\t"])))
        expected.setdefault(qid, {})[docid] = float(text)
        if draw(st.booleans()) and draw(st.booleans()):
            lines.append(draw(st.sampled_from(["", "  ", "\t"])))
    return lines, expected


def _write(path: Path, lines: list[str], newline: str, bom: bool) -> None:
    path.write_bytes((BOM if bom else b"") + "".join(line + newline for line in lines).encode("utf-8"))


@FUZZ
@given(run=run_files(), newline=st.sampled_from(["\n", "\r\n"]), bom=st.booleans())
def test_well_formed_runs_read_to_the_generated_scores(run, newline: str, bom: bool) -> None:
    lines, expected = run
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run.trec"
        _write(path, lines, newline, bom)
        assert read_trec_run(path) == expected


DEFECTS = ("fields", "score", "non_finite", "rank", "duplicate", "non_utf8")
bad_tokens = st.text(st.characters(exclude_categories=("Cs", "Zs", "Zl", "Zp", "Cc")), min_size=1, max_size=12)


@FUZZ
@given(run=run_files(), defect=st.sampled_from(DEFECTS), index=st.integers(0, 30), token=bad_tokens,
       rng=st.randoms(use_true_random=False))
@example(run=(["q Q0 d 1 1.5 t"], {"q": {"d": 1.5}}), defect="non_utf8", index=0, token="x", rng=random.Random(0))
@example(run=(["q Q0 d 1 1.5 t"], {"q": {"d": 1.5}}), defect="rank", index=0, token="first", rng=random.Random(0))
@example(run=(["q Q0 d 1 1.5 t"], {"q": {"d": 1.5}}), defect="score", index=0, token="1_0", rng=random.Random(0))
@example(run=(["q Q0 d 1 1.5 t"], {"q": {"d": 1.5}}), defect="score", index=0, token="\u0661",
         rng=random.Random(0))
def test_one_defect_names_the_file_and_line(run, defect: str, index: int, token: str, rng: random.Random) -> None:
    lines, _ = run
    lines = [line for line in lines if line.strip()] or ["q Q0 d 1 1.0 t"]
    position = index % len(lines)
    fields = lines[position].split()
    if defect == "fields":
        fields = fields[: rng.randint(1, 5)] if rng.random() < 0.5 else [*fields, token]
        fragment = "expected 6 fields"
    elif defect in ("score", "rank"):
        column = 4 if defect == "score" else 3
        if defect == "score" and DECIMAL.fullmatch(token) or defect == "rank" and re.fullmatch(r"[+-]?[0-9]+", token):
            token = token + "x"
        fields[column] = token
        fragment = "is not a number" if defect == "score" else "is not an integer"
        if defect == "score" and token.strip().lower().lstrip("+-") in ("nan", "inf", "infinity"):
            fragment = "is not a number"  # Python's float() would take these; a run file must not
    elif defect == "non_finite":
        fields[4] = rng.choice(["1e400", "-1e999", "9" * 400])
        fragment = "is not finite"
    elif defect == "duplicate":
        lines.insert(position + 1, lines[position])
        position += 1
        fragment = "appears twice"
    if defect == "non_utf8":
        data = lines[position].encode()
        cut = rng.randint(0, len(data))
        raw_line = data[:cut] + rng.choice([b"\xff", b"\xc3\x28", b"\x80", b"\xed\xa0\x80"]) + data[cut:]
        fragment = "not UTF-8"
    else:
        raw_line = " ".join(fields).encode() if defect != "duplicate" else lines[position].encode()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run.trec"
        body = [line.encode() for line in lines]
        body[position] = raw_line
        path.write_bytes(b"".join(line + b"\n" for line in body))
        try:
            read_trec_run(path)
        except RunFormatError as err:
            message = str(err)
        else:
            raise AssertionError(f"{defect} at line {position + 1} was accepted: {raw_line!r}")
    assert fragment in message, f"{defect}: expected {fragment!r} in {message!r}"
    assert_names_location(message, path, position + 1)


@FUZZ
@given(content=st.one_of(st.binary(max_size=200), st.lists(st.text(max_size=40), max_size=6).map(
    lambda lines: "\n".join(lines).encode())))
@example(content=b"q Q0 d\xff 1 1.5 t\n")  # regression: UnicodeDecodeError escaped
def test_arbitrary_bytes_read_or_raise_run_format_error(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run.trec"
        path.write_bytes(content)
        try:
            run = read_trec_run(path)
        except RunFormatError as err:
            assert_names_some_line(str(err), path)
            return
    for qid, docs in run.items():
        assert qid and all(docid and math.isfinite(score) for docid, score in docs.items())


def _writable(identifier: str) -> bool:
    """What a run file can carry in a whitespace-separated field."""
    return bool(identifier) and not any(ch.isspace() for ch in identifier) and "\ufeff" not in identifier


@FUZZ
@given(run=st.dictionaries(st.text(max_size=5), st.dictionaries(st.text(max_size=5), st.floats(width=32), max_size=5),
                           max_size=5),
       tag=st.text(max_size=5), k=st.one_of(st.none(), st.integers(1, 4)))
@example(run={"\ufeffq": {"d": 1.0}}, tag="t", k=None)  # regression: the reader took the id's U+FEFF for a BOM
def test_writer_round_trips_or_names_the_bad_value(run, tag: str, k: int | None) -> None:
    # trec_eval order (score descending, then docid descending); only the top k of each query are written
    order = lambda item: (item[1], item[0])  # noqa: E731
    written = {q: sorted(docs.items(), key=order, reverse=True)[:k] for q, docs in run.items()}
    ids_ok = _writable(tag) and all(_writable(q) and all(_writable(d) for d, _ in top) for q, top in written.items())
    scores_ok = all(math.isfinite(s) for top in written.values() for _, s in top)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run.trec"
        try:
            write_trec_run(run, path, tag=tag, k=k)
        except ValueError as err:
            assert not (ids_ok and scores_ok), f"a valid run was refused: {err}"
            message = str(err)
            assert "id" in message or "tag" in message or "score must be finite" in message, message
            assert not path.exists(), "a refused run left a partial file"
            return
        assert ids_ok and scores_ok, "an unwritable run was written"
        back = read_trec_run(path)
        lines = path.read_text(encoding="utf-8").splitlines()
    expected = {q: {d: float(f"{score:.6f}") for d, score in top} for q, top in written.items() if top}
    assert back == expected
    for qid in expected:  # ranks 1..n in trec_eval order: score descending
        mine = [line.split() for line in lines if line.split()[0] == qid]
        assert [int(f[3]) for f in mine] == list(range(1, len(mine) + 1))
        scores = [float(f[4]) for f in mine]
        assert scores == sorted(scores, reverse=True)
