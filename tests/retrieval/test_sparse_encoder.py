"""The inference-free sparse encoder: BM25 IDF, idf.json, ST-format round trip, fused encoding, bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from retrieval.encoder import (
    ModelFormatError,
    SparseEncoderConfig,
    bm25_idf,
    build_sparse_encoder,
    corpus_idf,
    decode_text,
    default_backbone,
    encode_documents,
    idf_weights,
    load_sparse_encoder,
    mlm_parts,
    query_weights,
    read_idf_json,
    write_idf_json,
)
from retrieval.hidden_cache import build_hidden_cache, encode_from_cache

CORPUS = {
    "d1": "the protein binds the receptor",
    "d2": "the receptor is a kinase",
    "d3": "aspirin and the stroke risk",
    "d4": "the " * 80 + "tail words never seen",  # longer than max_seq_length = 32
}


@pytest.fixture(scope="module")
def model():
    return build_sparse_encoder(SparseEncoderConfig(max_seq_length=32), corpus_texts=CORPUS.values())


def _dense(model, vector: dict[str, float]) -> torch.Tensor:
    tokenizer = mlm_parts(model)[0].tokenizer
    out = torch.zeros(len(tokenizer))
    for token, weight in vector.items():
        out[tokenizer.convert_tokens_to_ids(token)] = weight
    return out


def test_idf_is_the_bm25_formula_over_corpus_wordpieces(model) -> None:
    tokenizer = mlm_parts(model)[0].tokenizer
    idf = idf_weights(model)
    n = len(CORPUS)
    for token, df in {"the": 4, "receptor": 2, "stroke": 1, "zebra": 0}.items():
        expected = math.log(1 + (n - df + 0.5) / (df + 0.5))
        assert float(idf[tokenizer.convert_tokens_to_ids(token)]) == pytest.approx(expected, rel=1e-6)
    assert float(idf[tokenizer.cls_token_id]) == 0.0 and float(idf[tokenizer.pad_token_id]) == 0.0
    expected = torch.tensor([math.log(10.0), math.log(1 + 0.5 / 4.5)])
    torch.testing.assert_close(bm25_idf(torch.tensor([0, 4]), 4), expected)


def test_query_side_is_an_idf_lookup_equal_to_encode_query(model) -> None:
    weights = query_weights(model, {"q": "The receptor, the RECEPTOR!", "e": ""})
    idf = idf_weights(model)
    tokenizer = mlm_parts(model)[0].tokenizer
    assert set(weights["q"]) == {"the", "receptor", ",", "!"}  # unique wordpieces, lower-cased, counted once
    assert weights["q"]["the"] == pytest.approx(float(idf[tokenizer.convert_tokens_to_ids("the")]))
    assert weights["e"] == {}
    reference = model.encode_query(["The receptor, the RECEPTOR!"], convert_to_sparse_tensor=False)[0]
    torch.testing.assert_close(_dense(model, weights["q"]), reference.float())


def test_fused_document_encoding_equals_encode_document_and_counts_truncation(model) -> None:
    docs = {**CORPUS, "blank": "   ", "bytes": "caf\u00e9 protein".encode()}
    vectors, stats = encode_documents(model, docs, batch_size=2)
    assert stats.documents == 6 and stats.empty == 1 and stats.first_empty == "blank"
    assert stats.truncated == 1 and stats.first_truncated == "d4" and stats.max_length == 32
    assert vectors["blank"] == {}
    texts = [CORPUS["d1"], CORPUS["d4"], "caf\u00e9 protein"]
    reference = model.encode_document(texts, convert_to_sparse_tensor=False)
    for doc_id, row in zip(["d1", "d4", "bytes"], reference, strict=True):
        torch.testing.assert_close(_dense(model, vectors[doc_id]), row.float(), atol=1e-5, rtol=1e-5)
        assert len(vectors[doc_id]) == int((row > 0).sum())


def test_non_utf8_bytes_are_rejected_with_document_and_offset(model) -> None:
    with pytest.raises(ValueError, match=r"document 'bad'.*not valid UTF-8.*0xff at offset 3"):
        encode_documents(model, {"bad": b"abc\xffdef"})
    with pytest.raises(TypeError, match="query 'q'"):
        decode_text(3.5, where="query 'q'")  # type: ignore[arg-type]


def test_save_load_round_trip_in_sentence_transformers_format(model, tmp_path) -> None:
    model.save_pretrained(str(tmp_path / "m"))
    folder = tmp_path / "m"
    router = json.loads((folder / "router_config.json").read_text())
    assert router["structure"] == {
        "query": ["query_0_SparseStaticEmbedding"],
        "document": ["document_0_Transformer", "document_1_SpladePooling"],
    }
    loaded = load_sparse_encoder(folder)
    torch.testing.assert_close(idf_weights(loaded), idf_weights(model))
    a, _ = encode_documents(model, CORPUS)
    b, _ = encode_documents(loaded, CORPUS)
    for doc_id in CORPUS:
        torch.testing.assert_close(_dense(loaded, b[doc_id]), _dense(model, a[doc_id]))


def test_idf_json_round_trip_and_errors(model, tmp_path) -> None:
    tokenizer = mlm_parts(model)[0].tokenizer
    path = write_idf_json(tmp_path / "idf.json", idf_weights(model), tokenizer)
    torch.testing.assert_close(read_idf_json(path, tokenizer), idf_weights(model))
    (tmp_path / "foreign.json").write_text(json.dumps({"the": 1.0, "ĠThe": 2.0}))  # a GPT-2/RoBERTa token
    with pytest.raises(ValueError, match="not in the tokenizer's vocabulary"):
        read_idf_json(tmp_path / "foreign.json", tokenizer)
    (tmp_path / "latin1.json").write_bytes(b'{"caf\xe9": 1.0}')
    with pytest.raises(ValueError, match="not UTF-8"):
        read_idf_json(tmp_path / "latin1.json", tokenizer)
    (tmp_path / "neg.json").write_text(json.dumps({"the": -1}))
    with pytest.raises(ValueError, match="finite number >= 0"):
        read_idf_json(tmp_path / "neg.json", tokenizer)
    partial = read_idf_json(_write(tmp_path / "partial.json", {"the": 0.25}), tokenizer, missing=1.0)
    assert float(partial[tokenizer.convert_tokens_to_ids("the")]) == 0.25 and float(partial.max()) == 1.0


def _write(path, payload):
    path.write_text(json.dumps(payload))
    return path


def test_model_folder_from_another_library_is_rejected(tmp_path) -> None:
    with pytest.raises(ModelFormatError, match="dense|without a query/document Router"):
        load_sparse_encoder(default_backbone())  # a dense sentence-transformers model
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"architectures": ["BertForMaskedLM"]}))
    with pytest.raises(ModelFormatError, match=r"plain Hugging Face transformers checkpoint \(\['BertForMaskedLM"):
        load_sparse_encoder(hf)
    with pytest.raises(ModelFormatError, match="not found"):
        load_sparse_encoder(tmp_path / "missing")


def test_config_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="`activation`"):
        SparseEncoderConfig(activation="gelu")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`max_seq_length`"):
        SparseEncoderConfig(max_seq_length=4)
    with pytest.raises(ValueError, match="exactly one"):
        build_sparse_encoder(SparseEncoderConfig())


def test_cached_backbone_gives_the_same_vectors_and_the_minilm_sentence_embedding(model, tmp_path) -> None:
    from sentence_transformers import SentenceTransformer

    cache = build_hidden_cache(model, CORPUS, tmp_path / "cache", fingerprint={"t": 1})
    direct, stats = encode_documents(model, CORPUS)
    cached, cached_stats = encode_from_cache(model, cache)
    assert cached_stats.truncated == stats.truncated == 1
    for doc_id in CORPUS:  # float16 cache: weights within 2e-3
        torch.testing.assert_close(_dense(model, cached[doc_id]), _dense(model, direct[doc_id]), atol=2e-3, rtol=0)
    dense = SentenceTransformer(default_backbone())
    dense.max_seq_length = 32
    expected = dense.encode(list(CORPUS.values()), normalize_embeddings=True)
    np.testing.assert_allclose(cache.dense, expected, atol=1e-5)
    assert build_hidden_cache(model, CORPUS, tmp_path / "cache", fingerprint={"t": 1}).folder == cache.folder
    words = ["the", "receptor", "kinase", "zebra"]
    restricted, _ = encode_from_cache(model, cache, vocabulary=words, rows=[0, 1])
    assert list(restricted) == ["d1", "d2"]
    for doc_id, vector in restricted.items():  # exactly the full vector restricted to the vocabulary
        assert vector == pytest.approx({t: w for t, w in cached[doc_id].items() if t in words}, rel=1e-5)


def test_corpus_idf_rejects_empty_corpus(model) -> None:
    with pytest.raises(ValueError, match="empty"):
        corpus_idf([], mlm_parts(model)[0].tokenizer)


def test_cache_fingerprint_follows_corpus_content_not_path_or_mtime(tmp_path) -> None:
    import os

    from retrieval.hidden_cache import cache_fingerprint

    first, second = tmp_path / "a", tmp_path / "b"
    for folder in (first, second):
        folder.mkdir()
        (folder / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\n')
    os.utime(second / "corpus.jsonl", (1, 1))  # a re-copied file: same bytes, other mtime and path
    assert cache_fingerprint(first, "m", 256) == cache_fingerprint(second, "m", 256)
    (second / "corpus.jsonl").write_text('{"_id": "d1", "text": "y"}\n')
    assert cache_fingerprint(first, "m", 256) != cache_fingerprint(second, "m", 256)
    assert cache_fingerprint(first, "m", 256) != cache_fingerprint(first, "m", 128)
