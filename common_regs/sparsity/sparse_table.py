"""Compact storage of trained sparse weights (CSR) for serving, with the memory it saves.

A mask scheduler that trains at a fixed density (DSL, magnitude pruning) leaves each table as a dense tensor that
is mostly zeros. :func:`to_sparse_table` turns the trained weight and its mask into CSR (``scipy.sparse.csr_array``:
one ``indptr`` entry per row, then a column index and a value per kept entry), which is exactly the "per-row index
list" layout: row ``i`` keeps columns ``indices[indptr[i]:indptr[i+1]]``. Every mask-active entry is stored, even one
whose trained value happens to be 0, so the stored count equals the parameter budget.

Memory (bytes, as stored): ``nnz · (value bytes + index bytes) + (rows + 1) · indptr bytes`` against
``rows · cols · value bytes`` dense. With float32 values and int32 indices CSR only saves memory below density 0.5.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse
import torch
from torch import Tensor

from common_regs.io import atomic_path

logger = logging.getLogger(__name__)

__all__ = ["SparseTable", "load_sparse_tables", "memory_report", "save_sparse_tables", "to_sparse_table"]


@dataclass(frozen=True)
class SparseTable:
    """One trained sparse weight in CSR form (rows = embedding rows or output units).

    Args:
        matrix: the CSR matrix (``scipy.sparse.csr_array``), values in the weight's dtype.
        shape: the original tensor shape (a weight with more than two dims is stored as ``(shape[0], -1)``).
    """

    matrix: scipy.sparse.csr_array
    shape: tuple[int, ...]

    @property
    def nnz(self) -> int:
        return int(self.matrix.nnz)

    @property
    def nbytes(self) -> int:
        """Bytes of the stored arrays (values, column indices, row pointers)."""
        return int(self.matrix.data.nbytes + self.matrix.indices.nbytes + self.matrix.indptr.nbytes)

    @property
    def dense_nbytes(self) -> int:
        """Bytes of the same table stored dense in the same value dtype."""
        return int(np.prod(self.shape)) * self.matrix.data.itemsize

    def to_dense(self) -> Tensor:
        return torch.from_numpy(self.matrix.toarray()).reshape(self.shape)

    def to_torch(self) -> Tensor:
        """``torch.sparse_csr_tensor`` view for ``torch.sparse.mm`` scoring (e.g. all items against a query)."""
        m = self.matrix
        with warnings.catch_warnings():  # torch flags CSR as beta on every construction
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            return torch.sparse_csr_tensor(
                torch.from_numpy(m.indptr.astype(np.int64)),
                torch.from_numpy(m.indices.astype(np.int64)),
                torch.from_numpy(m.data),
                size=m.shape,
            )

    def lookup(self, ids: Tensor) -> Tensor:
        """Dense rows ``ids`` (an embedding lookup served from CSR), shape ``(len(ids), cols)``."""
        ids = torch.as_tensor(ids, dtype=torch.int64).reshape(-1)
        rows = self.matrix.shape[0]
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= rows):
            raise ValueError(f"`ids` must be in [0, {rows}), got values in [{int(ids.min())}, {int(ids.max())}].")
        indptr = torch.from_numpy(self.matrix.indptr.astype(np.int64))
        starts, counts = indptr[ids], indptr[ids + 1] - indptr[ids]
        out_row = torch.repeat_interleave(torch.arange(ids.numel()), counts)
        offsets = torch.arange(int(counts.sum())) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        position = torch.repeat_interleave(starts, counts) + offsets
        out = torch.zeros(ids.numel(), self.matrix.shape[1], dtype=torch.from_numpy(self.matrix.data[:0]).dtype)
        columns = torch.from_numpy(self.matrix.indices.astype(np.int64))[position]
        out[out_row, columns] = torch.from_numpy(self.matrix.data)[position]
        return out


def to_sparse_table(weight: Tensor, mask: Tensor) -> SparseTable:
    """CSR of ``weight`` keeping exactly the entries where ``mask`` is 1 (explicit zeros included)."""
    if weight.shape != mask.shape:
        raise ValueError(f"`mask` must have the weight's shape {tuple(weight.shape)}, got {tuple(mask.shape)}.")
    if weight.ndim == 0:
        raise ValueError("`weight` must have at least one dimension, got a scalar.")
    matrix_w = weight.detach().cpu().reshape(weight.shape[0], -1)
    keep = mask.detach().cpu().reshape(weight.shape[0], -1).bool()
    rows, cols = keep.nonzero(as_tuple=True)  # row-major order: CSR order
    indptr = torch.zeros(matrix_w.shape[0] + 1, dtype=torch.int64)
    indptr[1:] = torch.cumsum(torch.bincount(rows, minlength=matrix_w.shape[0]), 0)
    index_dtype = np.int32 if max(matrix_w.shape[1], int(indptr[-1])) < 2**31 else np.int64
    matrix = scipy.sparse.csr_array(
        (matrix_w[rows, cols].numpy(), cols.numpy().astype(index_dtype), indptr.numpy().astype(index_dtype)),
        shape=tuple(matrix_w.shape),
    )
    return SparseTable(matrix=matrix, shape=tuple(weight.shape))


def memory_report(tables: Mapping[str, SparseTable]) -> dict[str, Any]:
    """Per-table and total stored bytes, dense bytes and the saving ``1 - sparse / dense``."""
    per_table = {
        name: {"nnz": t.nnz, "sparse_bytes": t.nbytes, "dense_bytes": t.dense_nbytes} for name, t in tables.items()
    }
    sparse = sum(t.nbytes for t in tables.values())
    dense = sum(t.dense_nbytes for t in tables.values())
    return {
        "tables": per_table,
        "nnz": sum(t.nnz for t in tables.values()),
        "sparse_bytes": sparse,
        "dense_bytes": dense,
        "saving": 1.0 - sparse / dense if dense else 0.0,
    }


def save_sparse_tables(path: str | os.PathLike[str], tables: Mapping[str, SparseTable]) -> Path:
    """Write all tables to one ``.npz`` (arrays ``<name>/data|indices|indptr|shape``), atomically."""
    arrays: dict[str, np.ndarray] = {}
    for name, table in tables.items():
        arrays[f"{name}/data"] = table.matrix.data
        arrays[f"{name}/indices"] = table.matrix.indices
        arrays[f"{name}/indptr"] = table.matrix.indptr
        arrays[f"{name}/shape"] = np.asarray(table.shape, dtype=np.int64)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
    logger.info("saved %d sparse tables to %s", len(tables), path)
    return Path(path)


def load_sparse_tables(path: str | os.PathLike[str]) -> dict[str, SparseTable]:
    """Inverse of :func:`save_sparse_tables`."""
    tables: dict[str, SparseTable] = {}
    with np.load(path, allow_pickle=False) as archive:
        names = sorted({key.rsplit("/", 1)[0] for key in archive.files})
        for name in names:
            shape = tuple(int(s) for s in archive[f"{name}/shape"])
            rows = shape[0]
            cols = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            matrix = scipy.sparse.csr_array(
                (archive[f"{name}/data"], archive[f"{name}/indices"], archive[f"{name}/indptr"]), shape=(rows, cols)
            )
            tables[name] = SparseTable(matrix=matrix, shape=shape)
    return tables
