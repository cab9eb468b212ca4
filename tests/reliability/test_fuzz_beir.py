"""Property tests of the BEIR readers (``retrieval.beir``): generated folders, clean or with one defect.

* A clean folder, written with any mix of UTF-8 BOM, CRLF line ends, blank lines, ``ensure_ascii`` on or off, integer
  ids, extra fields and an optional qrels header, loads to exactly the generated records.
* One defect (malformed JSON, a non-object line, a missing / mistyped ``_id``, ``text`` or ``title``, a duplicate id,
  non-UTF-8 bytes, a lone-surrogate escape, a mid-file BOM, over-deep nesting, a 5000-digit integer, a qrels line
  with the wrong column count, an empty id, a bad score, a duplicate judgment, qrels naming an unknown query or
  document, a missing file) raises :class:`~retrieval.beir.BeirFormatError` naming the file and the exact line
  (or, for unknown ids, the file and the id).
* Arbitrary bytes give records or a ``BeirFormatError`` naming the file: never another exception.
"""

from __future__ import annotations

import json
import random
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fuzz_support import FUZZ, assert_names_location, assert_names_some_line, ids
from hypothesis import example, given
from hypothesis import strategies as st

from retrieval.beir import BeirFormatError, Document, load_beir, read_corpus, read_qrels, read_queries

BOM = b"\xef\xbb\xbf"
texts = st.text(max_size=12)  # any code point but surrogates: controls, U+2028, U+0085 and NUL included


@dataclass
class Beir:
    corpus: dict[str, tuple[str, str]]  # id -> (title, text)
    queries: dict[str, str]
    qrels: list[tuple[str, str, int]]


@dataclass
class Layout:
    bom: tuple[bool, bool, bool]  # corpus, queries, qrels
    newline: bytes
    ensure_ascii: bool
    blank_after: frozenset[int]  # record positions followed by a blank line
    header: bool
    int_ids: bool  # write canonical decimal ids as JSON integers
    extra_field: bool


@st.composite
def datasets(draw: st.DrawFn) -> Beir:
    doc_ids = draw(st.lists(ids, min_size=1, max_size=5, unique=True))
    query_ids = draw(st.lists(ids, min_size=1, max_size=4, unique=True))
    pairs = draw(
        st.lists(st.tuples(st.sampled_from(query_ids), st.sampled_from(doc_ids)), min_size=1, max_size=8, unique=True)
    )
    return Beir(
        corpus={d: (draw(texts), draw(texts)) for d in doc_ids},
        queries={q: draw(texts) for q in query_ids},
        qrels=[(q, d, draw(st.integers(-2, 3))) for q, d in pairs],
    )


layouts = st.builds(
    Layout,
    bom=st.tuples(st.booleans(), st.booleans(), st.booleans()),
    newline=st.sampled_from([b"\n", b"\r\n"]),
    ensure_ascii=st.booleans(),
    blank_after=st.frozensets(st.integers(0, 8), max_size=3),
    header=st.booleans(),
    int_ids=st.booleans(),
    extra_field=st.booleans(),
)


def _json_id(identifier: str, layout: Layout) -> str | int:
    canonical = identifier.isdigit() and str(int(identifier)) == identifier and len(identifier) < 10
    return int(identifier) if layout.int_ids and canonical else identifier


def _lines(data: Beir, layout: Layout) -> dict[str, list[bytes]]:
    """The three files as lists of encoded lines (no line ends), one record per line."""

    def dump(record: dict) -> bytes:
        if layout.extra_field:
            record = {**record, "metadata": {"source": "fuzz"}}
        return json.dumps(record, ensure_ascii=layout.ensure_ascii).encode("utf-8")

    corpus = []
    for d, (title, text) in data.corpus.items():
        record = {"_id": _json_id(d, layout), "text": text}
        if title:  # an absent title reads as ""
            record["title"] = title
        corpus.append(dump(record))
    queries = [dump({"_id": _json_id(q, layout), "text": text}) for q, text in data.queries.items()]
    qrels = [f"{q}\t{d}\t{score}".encode() for q, d, score in data.qrels]
    if layout.header:
        qrels.insert(0, b"query-id\tcorpus-id\tscore")
    return {"corpus.jsonl": corpus, "queries.jsonl": queries, "qrels/test.tsv": qrels}


def _write(folder: Path, files: dict[str, list[bytes]], layout: Layout) -> dict[str, list[int]]:
    """Write the files; return, per file, the 1-based line number of each entry of its list."""
    numbers: dict[str, list[int]] = {}
    for (name, lines), bom in zip(files.items(), layout.bom, strict=True):
        out, line_no = bytearray(BOM if bom else b""), 0
        numbers[name] = []
        for position, line in enumerate(lines):
            line_no += 1
            numbers[name].append(line_no)
            out += line + layout.newline
            if position in layout.blank_after:
                line_no += 1
                out += layout.newline
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(bytes(out))
    return numbers


def _expected(data: Beir) -> tuple[dict[str, Document], dict[str, str], dict[str, dict[str, int]]]:
    qrels: dict[str, dict[str, int]] = {}
    for q, d, score in data.qrels:
        qrels.setdefault(q, {})[d] = score
    corpus = {d: Document(title=title, text=text) for d, (title, text) in data.corpus.items()}
    return corpus, dict(data.queries), qrels


@FUZZ
@given(data=datasets(), layout=layouts)
@example(  # the official SciFact qrels: BOM-less header, CRLF
    data=Beir({"1": ("t", "x")}, {"0": "q"}, [("0", "1", 1)]),
    layout=Layout((True, False, False), b"\r\n", False, frozenset(), True, True, False),
)
def test_clean_folders_load_to_the_generated_records(data: Beir, layout: Layout) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "ds"
        _write(folder, _lines(data, layout), layout)
        dataset = load_beir(folder, split="test")
    corpus, queries, qrels = _expected(data)
    assert dataset.corpus == corpus
    assert dataset.queries == queries
    assert dataset.qrels == qrels
    assert dataset.split_queries == {q: queries[q] for q in qrels}


# ---------------------------------------------------------------------------------------------------------------
# One defect per folder
# ---------------------------------------------------------------------------------------------------------------

JSON_FILES = ("corpus.jsonl", "queries.jsonl")
JSON_DEFECTS = (
    "truncated", "not_object", "missing_id", "missing_text", "bad_id", "bad_field", "duplicate_id", "non_utf8",
    "lone_surrogate", "bom_mid_file", "deep_nesting", "huge_integer",
)
QRELS_DEFECTS = ("columns", "score", "empty_id", "duplicate", "non_utf8", "unknown_query", "unknown_doc")


PLANS = [
    *[(target, kind) for target in JSON_FILES for kind in JSON_DEFECTS
      if not (kind == "missing_text" and target == "corpus.jsonl")],
    *[("qrels/test.tsv", kind) for kind in QRELS_DEFECTS],
    *[(target, "missing_file") for target in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv")],
]
NON_UTF8 = [b"\xff", b"\xc3\x28", b"\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"]  # last two: surrogate, > U+10FFFF


def _valid_score(text: str) -> bool:
    """The qrels contract: an integer in ASCII digits, at most 18 characters (int64), surrounding spaces allowed."""
    return re.fullmatch(r"[+-]?[0-9]+", text.strip(), flags=re.ASCII) is not None and len(text.strip()) <= 18


bad_scores = st.text(st.characters(exclude_characters="\t\r\n", exclude_categories=("Cs",)), max_size=25).filter(
    lambda s: not _valid_score(s)
) | st.sampled_from(["1.0", "1e3", "1_0", "\u0661", "high", "", "99999999999999999999", "+-1", "0x1"])


def _damage(data: Beir, files: dict[str, list[bytes]], target: str, kind: str, index: int, rng: random.Random,
            bad_score: str) -> tuple[int, str]:
    """Apply ``kind`` to one line of ``files[target]`` (in place).

    Returns the position in the line list of the line the error must name (-1: none) and a message fragment.
    """
    if kind == "missing_file":
        return -1, "no qrels for split 'test'" if target == "qrels/test.tsv" else "file not found"
    lines = files[target]
    first = 1 if target == "qrels/test.tsv" and lines[0].startswith(b"query-id") else 0
    position = first + index % (len(lines) - first)
    if kind == "non_utf8":
        cut = rng.randint(0, len(lines[position]))
        lines[position] = lines[position][:cut] + rng.choice(NON_UTF8) + lines[position][cut:]
        return position, "not UTF-8"
    if target == "qrels/test.tsv":
        q, d, score = lines[position].decode().split("\t")
        if kind == "columns":
            lines[position] = rng.choice([f"{q}\t{d}", f"{q}\t0\t{d}\t{score}", f"{q} {d} {score}"]).encode()
            return position, "expected 3 tab-separated columns"
        if kind == "score":
            lines[position] = f"{q}\t{d}\t{bad_score}".encode()
            return position, "score must be an integer"
        if kind == "empty_id":
            lines[position] = rng.choice([f"\t{d}\t{score}", f"{q}\t \t{score}"]).encode()
            return position, "empty "
        if kind == "duplicate":
            lines.insert(position + 1, f"{q}\t{d}\t{rng.randint(0, 3)}".encode())
            return position + 1, f"duplicate judgment for query {q!r}, doc {d!r}"
        unknown = f"~{rng.randint(0, 999)}"  # "~" is outside the id alphabet: never a generated id
        if kind == "unknown_query":
            lines[position] = f"{unknown}\t{d}\t{score}".encode()
            return -1, f"query id {unknown!r} is not in"
        assert kind == "unknown_doc"
        lines[position] = f"{q}\t{unknown}\t{score}".encode()
        return -1, f"judges document id {unknown!r}"
    record = json.loads(lines[position])
    if kind == "truncated":  # any proper prefix of a one-line JSON object is malformed (cut between characters)
        text = lines[position].decode()
        lines[position] = text[: rng.randint(1, len(text) - 1)].encode()
        return position, "malformed JSON"
    if kind == "not_object":
        value = rng.choice([[1, 2], 7, "text", None, True, 1.5, []])
        lines[position] = json.dumps(value).encode()
        return position, "expected a JSON object"
    if kind in ("missing_id", "missing_text"):
        field = "_id" if kind == "missing_id" else "text"
        record.pop(field)
        lines[position] = json.dumps(record).encode()
        return position, f"missing field `{field}`"
    if kind == "bad_id":
        record["_id"] = rng.choice([1.5, True, False, None, [], {}, "", ["d1"], {"id": "d1"}])
        lines[position] = json.dumps(record).encode()
        return position, "`_id` must be a non-empty string or an integer"
    if kind == "bad_field":
        field = rng.choice(["text", "title"] if target == "corpus.jsonl" else ["text"])
        record[field] = rng.choice([0, 1.5, True, ["a"], {"a": "b"}])
        lines[position] = json.dumps(record).encode()
        return position, f"field `{field}` must be a string"
    if kind == "duplicate_id":
        lines.insert(position + 1, json.dumps({"_id": record["_id"], "text": "again"}).encode())
        noun = "document" if target == "corpus.jsonl" else "query"
        return position + 1, f"duplicate {noun} id {str(record['_id'])!r}"
    if kind == "lone_surrogate":
        record["text"] = "a\ud800b"
        lines[position] = json.dumps(record).encode()  # ensure_ascii=True writes the escape \\ud800
        return position, "field `text` is not valid Unicode"
    if kind == "bom_mid_file":  # a BOM is only tolerated at the start of the file
        lines.insert(position, b"")
        lines[position + 1] = BOM + lines[position + 1]
        return position + 1, "malformed JSON"
    if kind == "deep_nesting":
        lines[position] = b'{"_id": "x", "text": ' + b"[" * 3000 + b"]" * 3000 + b"}"
        return position, "nested too deeply"
    assert kind == "huge_integer"
    lines[position] = b'{"_id": ' + b"7" * 5000 + b', "text": "x"}'
    return position, "malformed JSON"


ONE_DOC = Beir({"d": ("", "x")}, {"q": "y"}, [("q", "d", 1)])
PLAIN = Layout((False, False, False), b"\n", True, frozenset(), False, False, False)


@FUZZ
@given(data=datasets(), layout=layouts, plan=st.sampled_from(PLANS), index=st.integers(0, 50),
       rng=st.randoms(use_true_random=False), bad_score=bad_scores)
@example(data=ONE_DOC, layout=PLAIN, plan=("corpus.jsonl", "deep_nesting"), index=0, rng=random.Random(0),
         bad_score="x")  # regression: RecursionError escaped
@example(data=ONE_DOC, layout=PLAIN, plan=("queries.jsonl", "huge_integer"), index=0, rng=random.Random(0),
         bad_score="x")  # regression: a bare ValueError (int max str digits) without file or line
@example(data=ONE_DOC, layout=PLAIN, plan=("corpus.jsonl", "bad_id"), index=0, rng=random.Random(1),
         bad_score="x")  # regression: `_id: true` was read as document "True"
@example(data=ONE_DOC, layout=PLAIN, plan=("queries.jsonl", "lone_surrogate"), index=0, rng=random.Random(0),
         bad_score="x")  # regression: a lone surrogate was kept and broke UTF-8 writers later
@example(data=ONE_DOC, layout=PLAIN, plan=("qrels/test.tsv", "score"), index=0, rng=random.Random(0),
         bad_score="1_0")  # regression: read as relevance 10
@example(data=ONE_DOC, layout=PLAIN, plan=("qrels/test.tsv", "score"), index=0, rng=random.Random(0),
         bad_score="\u0661")  # regression: ARABIC-INDIC DIGIT ONE read as relevance 1
@example(data=ONE_DOC, layout=PLAIN, plan=("qrels/test.tsv", "empty_id"), index=0, rng=random.Random(0),
         bad_score="x")  # regression: an empty query id was accepted
def test_one_defect_names_the_file_and_line(data: Beir, layout: Layout, plan: tuple[str, str], index: int,
                                            rng: random.Random, bad_score: str) -> None:
    target, kind = plan
    files = _lines(data, layout)
    named, fragment = _damage(data, files, target, kind, index, rng, bad_score)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "ds"
        numbers = _write(folder, files, layout)
        if kind == "missing_file":
            (folder / target).unlink()
        try:
            load_beir(folder, split="test")
        except BeirFormatError as err:
            message = str(err)
        else:
            raise AssertionError(f"{kind} in {target} was accepted")
    assert fragment in message, f"{kind} in {target}: expected {fragment!r} in {message!r}"
    assert_names_location(message, folder / target, numbers[target][named] if named >= 0 else None)


for _plan in PLANS:  # every defect at least once, whatever the random draws cover
    test_one_defect_names_the_file_and_line = example(
        data=ONE_DOC, layout=PLAIN, plan=_plan, index=0, rng=random.Random(0), bad_score="1.0"
    )(test_one_defect_names_the_file_and_line)


# ---------------------------------------------------------------------------------------------------------------
# Arbitrary bytes
# ---------------------------------------------------------------------------------------------------------------

garbage_lines = st.lists(
    st.one_of(
        st.binary(max_size=30),
        st.text(max_size=30).map(lambda s: s.encode("utf-8")),
        st.fixed_dictionaries({}, optional={"_id": st.one_of(ids, st.integers(), st.none(), st.floats()),
                                            "text": st.one_of(texts, st.integers(), st.none()),
                                            "title": st.one_of(texts, st.lists(st.integers(), max_size=2))}
                              ).map(lambda r: json.dumps(r).encode()),
        st.tuples(ids, ids, st.text(max_size=4)).map(lambda t: "\t".join(t).encode()),
    ),
    max_size=6,
)


@FUZZ
@given(lines=garbage_lines, newline=st.sampled_from([b"\n", b"\r\n", b"\r"]), bom=st.booleans())
@example(lines=[b'{"_id": true, "text": "x"}'], newline=b"\n", bom=False)  # regression: read as document "True"
@example(lines=[b'{"_id": "a", "text": "\\udc80"}'], newline=b"\n", bom=False)  # regression: lone surrogate kept
@example(lines=[b"q\td\t1_0", b"q\te\t\xd9\xa1"], newline=b"\n", bom=False)  # regression: read as 10 and 1
@example(lines=[b"\td\t1"], newline=b"\n", bom=False)  # regression: empty query id accepted
def test_arbitrary_bytes_give_records_or_a_beir_format_error(lines: list[bytes], newline: bytes, bom: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "file"
        path.write_bytes((BOM if bom else b"") + newline.join(lines) + newline)
        for reader in (read_corpus, read_queries, read_qrels):
            try:
                result = reader(path)
            except BeirFormatError as err:
                assert_names_some_line(str(err), path)
                continue
            if reader is read_qrels:
                assert result and all(q and all(d and isinstance(s, int) for d, s in docs.items())
                                      for q, docs in result.items())
            else:
                records = result if reader is read_corpus else result[0]
                assert records, "a file without records must be an error"
                for key, value in records.items():
                    assert key and isinstance(key, str)
                    key.encode("utf-8")  # every id is writable as UTF-8 (Lucene, run files)
                    for text in (value.title, value.text) if reader is read_corpus else (value,):
                        assert isinstance(text, str)
                        text.encode("utf-8")
