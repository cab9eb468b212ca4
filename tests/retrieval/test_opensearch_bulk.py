"""OpenSearch ``_bulk`` export of learned sparse vectors: NDJSON structure and weight round-trip.

The bulk format (OpenSearch "Bulk API" docs): newline-delimited JSON, each operation an action line
(``{"index": {"_index": ..., "_id": ...}}``) followed by the document source on the next line, every line —
the last one included — terminated by ``\\n``. A ``rank_features`` field holds ``{feature: positive float}``.
"""

from __future__ import annotations

import json

import pytest

from retrieval.sparse_index import write_opensearch_bulk

VECTORS = {
    "d1": {"kinase": 1.234567890123, "protein": 0.1, "##ase": 3.0},
    "d 2": {"café": 0.5, "zero": 0.0, "neg": -0.2},  # unicode token; non-positive weights are not features
    "d3": {},
    "42": {"x": 1e-7, "y": 12345.678},
}


def test_bulk_file_is_action_then_source_lines_newline_terminated(tmp_path) -> None:
    bulk, mapping_path = write_opensearch_bulk(VECTORS, tmp_path / "docs.ndjson", index_name="corpus-v1")
    raw = bulk.read_bytes()
    assert raw.endswith(b"\n") and b"\r" not in raw  # the final line is newline-terminated too
    lines = raw.decode("utf-8").split("\n")[:-1]
    assert len(lines) == 2 * len(VECTORS) and all(lines)
    for (doc_id, vector), action_line, source_line in zip(VECTORS.items(), lines[::2], lines[1::2], strict=True):
        action, source = json.loads(action_line), json.loads(source_line)
        assert action == {"index": {"_index": "corpus-v1", "_id": doc_id}}
        expected = {t: w for t, w in vector.items() if w > 0}
        assert source == ({"sparse_embedding": expected} if expected else {})
        # weights round-trip exactly: JSON floats are written with Python's shortest repr
        for token, weight in source.get("sparse_embedding", {}).items():
            assert isinstance(weight, float) and weight == vector[token] and weight > 0
    assert "café" in raw.decode("utf-8")  # written as UTF-8, not \\u escapes
    mapping = json.loads(mapping_path.read_text())
    assert mapping == {"mappings": {"properties": {"sparse_embedding": {"type": "rank_features"}}}}
    assert mapping_path.name == "docs.ndjson.mapping.json"


def test_field_name_and_index_name_validation(tmp_path) -> None:
    bulk, mapping_path = write_opensearch_bulk({"a": {"t": 2.0}}, tmp_path / "b.ndjson", index_name="x",
                                               field="terms")
    assert json.loads(bulk.read_text().splitlines()[1]) == {"terms": {"t": 2.0}}
    assert json.loads(mapping_path.read_text())["mappings"]["properties"] == {"terms": {"type": "rank_features"}}
    for bad in ("Upper", "has space", "a/b", ""):
        with pytest.raises(ValueError, match="`index_name`"):
            write_opensearch_bulk({"a": {"t": 1.0}}, tmp_path / "c.ndjson", index_name=bad)
    assert not (tmp_path / "c.ndjson").exists()
