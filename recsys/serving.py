"""Serve a trained recommender: item embeddings in a FAISS index, top-k per user with seen items excluded.

Index types and the exact ranking of a flat index: :mod:`recsys.faiss_index`.

Cold start: a user with no training interactions (unknown id, or known with an empty history) is served from
its features when the model has a user-feature tower (two-tower with user features: the id bag is emptied), and
otherwise by popularity (training interaction counts). :meth:`Recommender.save` writes the model, vocabularies,
feature tables, seen items, popularity and index into one folder atomically, with a manifest (``serving.json``)
holding each file's size and SHA-256 and the index's vector count and dimension; :meth:`Recommender.load` verifies
them before restoring it, so a truncated file or an index copied from another model is an error naming the file.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common_regs.checkpoint import sha256_file
from common_regs.io import atomic_dir
from common_regs.safe_load import UnsafeFileError, load_tensors
from recsys.data import Interactions, Vocabulary
from recsys.faiss_index import IndexConfig, build_faiss_index, exact_top_k, flat_vectors
from recsys.features import FeatureTable
from recsys.models import build_model
from recsys.models.base import Recommender as RecModel

logger = logging.getLogger(__name__)

__all__ = ["IndexConfig", "Recommender", "ServedModelError", "build_faiss_index"]

_FORMAT_VERSION = 2  # 2: serving.json records each file's size and SHA-256 and the index's shape


class ServedModelError(ValueError):
    """A saved recommender folder is damaged or mixed with files of another model; the message names the file."""


def _csr(interactions: Interactions) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique known items of each known user as CSR ``(indptr, indices)``."""
    keys = interactions.pair_keys()
    users, items = np.divmod(keys, interactions.num_items)
    indptr = np.zeros(interactions.num_users + 1, dtype=np.int64)
    np.add.at(indptr, users + 1, 1)
    return np.cumsum(indptr), items.astype(np.int64)


def _served_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s state dict with every ``torch.nn.utils.parametrize`` parametrization baked in.

    Training hooks (DSL / pruning masks, reparametrizations) leave parametrizations on the trained model; the served
    model is rebuilt plain by :meth:`Recommender.load`, so it stores the effective weights under their plain names.
    """
    from torch.nn.utils import parametrize

    if not any(parametrize.is_parametrized(module) for module in model.modules()):
        return model.state_dict()
    plain = copy.deepcopy(model)
    for module in plain.modules():
        if parametrize.is_parametrized(module):
            for name in list(module.parametrizations):
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    return plain.state_dict()


class Recommender:
    """Top-k recommendation from a trained model through FAISS.

    Args:
        model: the trained recommender. users / items: vocabularies (raw id ↔ index).
        user_features / item_features: the model's feature tables (saved with it).
        seen: training interactions (excluded from recommendations; also the popularity fallback).
        index: FAISS options.
    """

    def __init__(
        self,
        model: RecModel,
        users: Vocabulary,
        items: Vocabulary,
        user_features: FeatureTable,
        item_features: FeatureTable,
        seen: Interactions,
        index: IndexConfig | None = None,
    ) -> None:
        if (seen.num_users, seen.num_items) != (users.size, items.size):
            raise ValueError(
                f"`seen` indexes {seen.num_users} users / {seen.num_items} items, vocabularies have "
                f"{users.size} / {items.size}."
            )
        self.model, self.users, self.items = model, users, items
        self.user_features, self.item_features = user_features, item_features
        self.index_config = index or IndexConfig()
        self.seen_indptr, self.seen_items = _csr(seen)
        self.popularity = seen.item_counts()
        self._popular_order = np.lexsort((np.arange(items.size), -self.popularity))
        self.index = self._build_index()

    @classmethod
    def _from_parts(cls, **parts: Any) -> Recommender:
        service = cls.__new__(cls)
        for key, value in parts.items():
            setattr(service, key, value)
        service._popular_order = np.lexsort((np.arange(service.items.size), -service.popularity))
        return service

    def _build_index(self) -> Any:
        self.model.eval()
        with torch.no_grad():
            vectors = self.model.item_embeddings().detach().cpu().numpy()
        return build_faiss_index(vectors, self.index_config)

    def with_seen(self, seen: Interactions, *, popularity: np.ndarray | None = None) -> Recommender:
        """A view that shares this recommender's model, vocabularies and FAISS index but excludes ``seen``.

        Used to evaluate a log too large for one in-memory CSR one user partition at a time
        (:func:`pipelines.evaluation.recsys_streaming.evaluate_recommendations_streaming`): a partition's training
        interactions replace the seen items; ``popularity`` (training counts of the whole log, e.g.
        :func:`recsys.data.item_frequencies`) replaces the popularity fallback and head/tail split (default: kept).
        """
        if (seen.num_users, seen.num_items) != (self.users.size, self.items.size):
            raise ValueError(
                f"`seen` indexes {seen.num_users} users / {seen.num_items} items, vocabularies have "
                f"{self.users.size} / {self.items.size}."
            )
        if popularity is not None and np.shape(popularity) != (self.items.size,):
            raise ValueError(
                f"`popularity` must have shape ({self.items.size},), got {np.shape(popularity)}."
            )
        indptr, items = _csr(seen)
        return Recommender._from_parts(
            model=self.model,
            users=self.users,
            items=self.items,
            user_features=self.user_features,
            item_features=self.item_features,
            index_config=self.index_config,
            seen_indptr=indptr,
            seen_items=items,
            popularity=self.popularity if popularity is None else np.asarray(popularity, dtype=np.int64),
            index=self.index,
        )

    def refresh(self) -> None:
        """Re-embed the catalogue after the model changed (e.g. between training epochs)."""
        self.index = self._build_index()

    def seen_of(self, user: int) -> np.ndarray:
        if user >= self.users.size:
            return np.empty(0, dtype=np.int64)
        return self.seen_items[self.seen_indptr[user] : self.seen_indptr[user + 1]]

    def is_cold(self, users: np.ndarray) -> np.ndarray:
        """Users with no training interactions (OOV, or known with an empty history)."""
        users = np.asarray(users, dtype=np.int64)
        known = users < self.users.size
        counts = np.zeros(users.shape, dtype=np.int64)
        counts[known] = self.seen_indptr[users[known] + 1] - self.seen_indptr[users[known]]
        return counts == 0

    def served_by_popularity(self, users: np.ndarray) -> np.ndarray:
        """Which users (indices) get the most popular items.

        Cold ones the model cannot embed: an unknown id, or a known user without history when the model has no
        user-feature tower.
        """
        users = np.asarray(users, dtype=np.int64)
        embeddable = (users < self.users.size) & bool(self.model.has_user_features)
        return self.is_cold(users) & ~embeddable

    def recommend_indices(
        self, users: Sequence[int] | np.ndarray, k: int, *, exclude_seen: bool = True, batch_size: int = 1024
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` item indices and scores ``(U, k)`` for user indices (``-1`` / ``-inf`` pad short lists)."""
        if k < 1:
            raise ValueError(f"`k` must be >= 1, got {k}.")
        users = np.asarray(users, dtype=np.int64)
        if users.size and (users.min() < 0 or users.max() > self.users.oov_index):
            raise ValueError(
                f"user indices must lie in [0, {self.users.oov_index}], got [{users.min()}, {users.max()}]."
            )
        out_items = np.full((users.size, k), -1, dtype=np.int64)
        out_scores = np.full((users.size, k), -np.inf, dtype=np.float32)
        cold = self.is_cold(users)
        by_model = ~self.served_by_popularity(users)
        for start in range(0, users.size, batch_size):
            rows = np.arange(start, min(start + batch_size, users.size))
            model_rows = rows[by_model[rows]]
            if model_rows.size:
                self._search(users[model_rows], cold[model_rows], k, exclude_seen, out_items, out_scores, model_rows)
        for row in np.flatnonzero(~by_model):
            self._popular(users[row], k, exclude_seen, out_items, out_scores, row)
        return out_items, out_scores

    def _search(
        self,
        users: np.ndarray,
        cold: np.ndarray,
        k: int,
        exclude_seen: bool,
        out_items: np.ndarray,
        out_scores: np.ndarray,
        rows: np.ndarray,
    ) -> None:
        self.model.eval()
        with torch.no_grad():
            queries = self.model.user_embeddings(torch.from_numpy(users), cold=torch.from_numpy(cold))
        queries_np = np.ascontiguousarray(queries.cpu().numpy(), dtype=np.float32)
        known = users < self.users.size
        seen_counts = np.zeros(users.size, dtype=np.int64)
        if exclude_seen:
            seen_counts[known] = self.seen_indptr[users[known] + 1] - self.seen_indptr[users[known]]
        vectors = flat_vectors(self.index)
        if vectors is not None:
            first = self.seen_indptr[np.minimum(users, self.users.size - 1)]
            offsets = np.arange(int(seen_counts.sum())) - np.repeat(np.cumsum(seen_counts) - seen_counts, seen_counts)
            excluded = (np.concatenate([[0], np.cumsum(seen_counts)]),
                        self.seen_items[np.repeat(first, seen_counts) + offsets])
            out_items[rows], out_scores[rows] = exact_top_k(queries_np, vectors, k, excluded=excluded)
            return
        # each user's search returns k + its own seen count (rounded up to a power of two, so a batch makes a few
        # searches): the first k unseen items are then among them, without fetching the heaviest user's count for all
        fetch = np.minimum(2 ** np.ceil(np.log2(k + seen_counts)).astype(np.int64), self.index.ntotal)
        for size in np.unique(fetch).tolist():
            group = np.flatnonzero(fetch == size)
            scores, items = self.index.search(queries_np[group], size)
            keep = (items >= 0) & ~self._is_seen(users[group], items) if exclude_seen else items >= 0
            rank = np.cumsum(keep, axis=1) - 1  # slot of each kept candidate
            chosen, column = np.nonzero(keep & (rank < k))
            out_items[rows[group][chosen], rank[chosen, column]] = items[chosen, column]
            out_scores[rows[group][chosen], rank[chosen, column]] = scores[chosen, column]

    def _is_seen(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Whether ``items[r, c]`` is a training item of ``users[r]``, by the sorted keys of the seen CSR."""
        keys = users[:, None] * self.items.size + items
        position = np.minimum(np.searchsorted(self._seen_keys, keys), max(self._seen_keys.size - 1, 0))
        return self._seen_keys[position] == keys if self._seen_keys.size else np.zeros(keys.shape, dtype=bool)

    @functools.cached_property
    def _seen_keys(self) -> np.ndarray:
        users = np.repeat(np.arange(self.seen_indptr.size - 1, dtype=np.int64), np.diff(self.seen_indptr))
        return users * self.items.size + self.seen_items  # sorted: the CSR is sorted by user, then item

    def _popular(
        self, user: int, k: int, exclude_seen: bool, out_items: np.ndarray, out_scores: np.ndarray, row: int
    ) -> None:
        order = self._popular_order
        if exclude_seen:
            order = order[~np.isin(order, self.seen_of(user))]
        chosen = order[:k]
        out_items[row, : chosen.size] = chosen
        out_scores[row, : chosen.size] = self.popularity[chosen]

    def recommend(
        self, user_ids: Sequence[Any], k: int = 10, *, exclude_seen: bool = True
    ) -> list[list[tuple[Any, float]]]:
        """Top-``k`` ``(raw item id, score)`` per raw user id; unknown users are cold-start users."""
        indices = self.users.encode(np.asarray(list(user_ids)))
        items, scores = self.recommend_indices(indices, k, exclude_seen=exclude_seen)
        result = []
        for row_items, row_scores in zip(items, scores, strict=True):
            valid = row_items >= 0
            raw = self.items.decode(row_items[valid]).tolist()
            result.append(list(zip(raw, row_scores[valid].astype(float).tolist(), strict=True)))
        return result

    # -- persistence -------------------------------------------------------------------------------------------

    def save(
        self, path: str | os.PathLike[str], *, overwrite: bool = False, extra: dict[str, Any] | None = None
    ) -> Path:
        """Write everything needed to serve into the folder ``path`` (atomically).

        ``serving.json`` (the manifest) records the size and SHA-256 of every other file and the FAISS index's
        vector count and dimension; :meth:`load` verifies them.
        """
        import faiss

        with atomic_dir(path, overwrite=overwrite, markers=("serving.json",)) as tmp:
            torch.save(
                {"name": self.model.name, "config": self.model.get_config(), "state_dict": _served_state(self.model)},
                tmp / "model.pt",
            )
            self.users.save(tmp / "users.parquet")
            self.items.save(tmp / "items.parquet")
            self.user_features.save(tmp / "user_features.npz")
            self.item_features.save(tmp / "item_features.npz")
            with open(tmp / "seen.npz", "wb") as handle:
                np.savez(handle, indptr=self.seen_indptr, items=self.seen_items, popularity=self.popularity)
            faiss.write_index(self.index, str(tmp / _INDEX_FILE))
            meta = {
                **(extra or {}),
                "format_version": _FORMAT_VERSION,
                "model": self.model.name,
                "index": asdict(self.index_config),
                "faiss": {"ntotal": int(self.index.ntotal), "dimension": int(self.index.d)},
                "files": {name: {"bytes": (tmp / name).stat().st_size, "sha256": sha256_file(tmp / name)}
                          for name in _SERVED_FILES},
            }
            (tmp / "serving.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Recommender:
        """Load a folder written by :meth:`save`, verifying every file against the manifest first.

        Raises:
            FileNotFoundError: no ``serving.json``. ServedModelError: the manifest or a file is unreadable, a file's
                size or SHA-256 differs from the manifest (truncated, damaged or replaced), or the FAISS index does not
                hold one vector per item of the recorded dimension; the message names the file.
        """
        import faiss

        path = Path(path)
        meta = _read_manifest(path)
        _verify_files(path, meta)
        users = _read(path / "users.parquet", lambda file: Vocabulary.load(file, name="user_id"))
        items = _read(path / "items.parquet", lambda file: Vocabulary.load(file, name="item_id"))
        user_features = _read(path / "user_features.npz", FeatureTable.load)
        item_features = _read(path / "item_features.npz", FeatureTable.load)
        saved = _read(path / "model.pt", lambda file: load_tensors(file, what="served model"))
        model = build_model(saved["name"], saved["config"], users=user_features, items=item_features)
        model.load_state_dict(saved["state_dict"])
        model.eval()
        indptr, seen_items, popularity = _read(path / "seen.npz", _read_seen)
        index = _read(path / _INDEX_FILE, lambda file: faiss.read_index(str(file)))
        _check_index(path / _INDEX_FILE, index, meta.get("faiss"), items.size)
        return cls._from_parts(
            model=model,
            users=users,
            items=items,
            user_features=user_features,
            item_features=item_features,
            index_config=IndexConfig(**meta["index"]),
            seen_indptr=indptr,
            seen_items=seen_items,
            popularity=popularity,
            index=index,
        )


_INDEX_FILE = "index.faiss"
_SERVED_FILES = (
    "model.pt", "users.parquet", "items.parquet", "user_features.npz", "item_features.npz", "seen.npz", _INDEX_FILE
)
_RESAVE = "re-save the model (rerun `regkit recsys train`) or restore the folder from a complete copy"


def _read_manifest(path: Path) -> dict[str, Any]:
    meta_path = path / "serving.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{path}: not a saved regkit recommender (no serving.json).")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ServedModelError(f"{meta_path}: not a valid manifest ({err}); {_RESAVE}.") from None
    if not isinstance(meta, dict) or meta.get("format_version") not in (1, _FORMAT_VERSION):
        version = meta.get("format_version") if isinstance(meta, dict) else None
        raise ServedModelError(f"{meta_path}: format_version {version}, expected {_FORMAT_VERSION}.")
    return meta


def _verify_files(path: Path, meta: dict[str, Any]) -> None:
    """Compare each file's size and SHA-256 with the manifest (format 1 recorded none: it is loaded unverified)."""
    if meta["format_version"] == 1:
        logger.warning("%s was saved by an older regkit without file checksums: its files are not verified", path)
        return
    for name, recorded in meta["files"].items():
        file = path / name
        if not file.is_file():
            raise ServedModelError(f"{file}: missing from the saved model (listed in serving.json); {_RESAVE}.")
        size = file.stat().st_size
        if size != recorded["bytes"] or sha256_file(file) != recorded["sha256"]:
            raise ServedModelError(
                f"{file}: {size:,} bytes whose SHA-256 differs from the {recorded['bytes']:,} bytes recorded in "
                f"serving.json (truncated, damaged or replaced after saving); {_RESAVE}."
            )


def _read(file: Path, read: Callable[[Path], Any]) -> Any:
    """``read(file)``; a failure to parse it becomes one :class:`ServedModelError` naming the file."""
    try:
        return read(file)
    except UnsafeFileError:
        raise
    except Exception as err:  # noqa: BLE001 - parquet, npz, torch and faiss readers raise unrelated types
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ServedModelError(f"{file}: cannot be read ({reason}); {_RESAVE}.") from None


def _read_seen(file: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with np.load(file, allow_pickle=False) as seen:
        return seen["indptr"], seen["items"], seen["popularity"]


def _check_index(file: Path, index: Any, recorded: dict[str, int] | None, num_items: int) -> None:
    """The index must hold one vector per catalogue item, of the dimension recorded when it was saved."""
    dimension = recorded["dimension"] if recorded else int(index.d)  # format 1 recorded no dimension
    if int(index.ntotal) != num_items or int(index.d) != dimension:
        raise ServedModelError(
            f"{file}: holds {int(index.ntotal):,} vectors of dimension {int(index.d)}, but this model serves "
            f"{num_items:,} items of dimension {dimension} (serving.json): the index belongs to another model; "
            f"{_RESAVE}."
        )
