"""LightGCN: K rounds of neighbour averaging on the normalised user-item graph, layer embeddings averaged.

Reference: He, Deng, Wang, Li, Zhang, Wang, "LightGCN: Simplifying and Powering Graph Convolution Network for
Recommendation", SIGIR 2020, arXiv:2002.02126 (Eq. 3: e^(k+1) = Σ_j 1/√(|N_u||N_i|) e^(k); Eq. 4: e = Σ_k α_k e^(k)
with α_k = 1/(K+1); matrix form Eq. 8-9: E^(k+1) = D^{-1/2} A D^{-1/2} E^(k), A = [[0, R], [Rᵀ, 0]]).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from recsys.data import Interactions
from recsys.models.base import RecBatch, Recommender, RecOutput, Similarity, register_model

if TYPE_CHECKING:
    from recsys.features import FeatureTable

logger = logging.getLogger(__name__)

__all__ = ["LightGCN", "normalized_adjacency"]


def normalized_adjacency(
    users: np.ndarray, items: np.ndarray, num_users: int, num_items: int
) -> tuple[Tensor, Tensor]:
    """Indices ``(2, nnz)`` and values of Â = D^{-1/2} A D^{-1/2} over nodes ``[users; items]``.

    A has a 1 for every distinct (user, item) training pair in both off-diagonal blocks; D is its degree
    matrix. Isolated nodes have no entries (their propagated embedding is 0 beyond layer 0).
    """
    keep = (users < num_users) & (items < num_items)
    pairs = np.unique(np.stack([users[keep], items[keep]]), axis=1)
    rows = np.concatenate([pairs[0], pairs[1] + num_users])
    cols = np.concatenate([pairs[1] + num_users, pairs[0]])
    degree = np.bincount(rows, minlength=num_users + num_items).astype(np.float64)
    values = 1.0 / np.sqrt(degree[rows] * degree[cols])
    order = np.lexsort((cols, rows))
    indices = torch.from_numpy(np.stack([rows[order], cols[order]]).astype(np.int64))
    return indices, torch.from_numpy(values[order].astype(np.float32))


@register_model
class LightGCN(Recommender):
    """LightGCN with ``num_layers`` propagation layers on a torch sparse (CSR) adjacency.

    Only the layer-0 embeddings E^(0) are parameters. The graph is built from the training interactions and
    stored as buffers (so a saved model serves without the training log). Each training step propagates the
    whole graph once (as the reference implementation does); evaluation propagates once for all users.

    Args:
        num_users, num_items: vocabulary sizes. interactions: training pairs defining the graph (or ``None``
            when rebuilding from a state dict that holds the graph).
        embedding_dim: D. Default 64 (paper §4.1.2). num_layers: K. Default 3 (paper Tab. 4 best on all sets).
        normalize, temperature, learnable_temperature: see :class:`~recsys.models.base.Similarity`. Default off:
            the paper's dot product.
        init_std: N(0, σ²) init of E^(0). Default 0.1 (reference code ``nn.init.normal_(std=0.1)``).

    Note:
        Users and items that are isolated in the training graph keep only their layer-0 term
        ``e^(0)/(K+1)``, which was never trained; serving falls back to popularity for users without
        training interactions.
    """

    name = "lightgcn"

    def __init__(
        self,
        num_users: int,
        num_items: int,
        interactions: Interactions | None = None,
        embedding_dim: int = 64,
        num_layers: int = 3,
        normalize: bool = False,
        temperature: float = 1.0,
        learnable_temperature: bool = False,
        init_std: float = 0.1,
        *,
        graph_nnz: int | None = None,
    ) -> None:
        super().__init__(num_users, num_items, Similarity(normalize, temperature, learnable_temperature))
        if num_layers < 0:
            raise ValueError(f"`num_layers` must be >= 0, got {num_layers}.")
        if embedding_dim < 1:
            raise ValueError(f"`embedding_dim` must be >= 1, got {embedding_dim}.")
        self.embedding_dim, self.num_layers, self.init_std = embedding_dim, num_layers, init_std
        self.user_table = nn.Embedding(num_users + 1, embedding_dim)
        self.item_table = nn.Embedding(num_items + 1, embedding_dim)
        nn.init.normal_(self.user_table.weight, std=init_std)
        nn.init.normal_(self.item_table.weight, std=init_std)
        if interactions is not None:
            self.check_interactions(interactions)
            indices, values = normalized_adjacency(interactions.users, interactions.items, num_users, num_items)
        elif graph_nnz is not None:
            indices, values = torch.zeros(2, graph_nnz, dtype=torch.int64), torch.zeros(graph_nnz)
        else:
            raise ValueError("LightGCN needs the training `interactions` (or `graph_nnz` when loading a state dict).")
        self.register_buffer("graph_indices", indices)
        self.register_buffer("graph_values", values)
        self._graph: Tensor | None = None

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._graph = None  # rebuilt from the loaded buffers
        super()._load_from_state_dict(*args, **kwargs)

    def graph(self) -> Tensor:
        """Â as a sparse CSR tensor over the ``num_users + num_items`` nodes (OOV rows excluded)."""
        if self._graph is None:
            size = self.num_users + self.num_items
            coo = torch.sparse_coo_tensor(self.graph_indices, self.graph_values, (size, size), is_coalesced=True)
            self._graph = coo.to_sparse_csr()
        return self._graph

    def propagate(self) -> tuple[Tensor, Tensor]:
        """Final embeddings e = 1/(K+1) Σ_k Â^k E^(0) of all known users and items (Eq. 4, α_k = 1/(K+1))."""
        layer = torch.cat([self.user_table.weight[: self.num_users], self.item_table.weight[: self.num_items]])
        total = layer
        graph = self.graph()
        for _ in range(self.num_layers):
            layer = torch.sparse.mm(graph, layer)
            total = total + layer
        final = total / (self.num_layers + 1)
        return final[: self.num_users], final[self.num_users :]

    def _with_oov(self, final: Tensor, table: nn.Embedding, count: int) -> Tensor:
        return torch.cat([final, table.weight[count:] / (self.num_layers + 1)])

    def forward(self, batch: RecBatch) -> RecOutput:
        users_final, items_final = self.propagate()
        users_all = self._with_oov(users_final, self.user_table, self.num_users)
        items_all = self._with_oov(items_final, self.item_table, self.num_items)
        embed = self.similarity.embed
        regularized = [self.user_table(batch.users), self.item_table(batch.items)]
        negatives = None
        if batch.negatives is not None:
            negatives = embed(items_all[batch.negatives])
            regularized.append(self.item_table(batch.negatives))
        return RecOutput(
            user=embed(users_all[batch.users]),
            item=embed(items_all[batch.items]),
            negatives=negatives,
            scale=self.similarity.scale(),
            regularized=regularized,
        )

    def user_embeddings(self, users: Tensor, *, cold: Tensor | None = None) -> Tensor:
        users_final, _ = self.propagate()
        all_users = self._with_oov(users_final, self.user_table, self.num_users)
        if cold is not None and bool(cold.any()):
            users = torch.where(cold, torch.full_like(users, self.num_users), users)
        return self.similarity.embed(all_users[users])

    def item_embeddings(self) -> Tensor:
        return self.similarity.embed(self.propagate()[1])

    @classmethod
    def from_data(
        cls,
        config: Mapping[str, Any],
        *,
        users: FeatureTable,
        items: FeatureTable,
        interactions: Interactions | None = None,
    ) -> LightGCN:
        """LightGCN over the training ``interactions``' graph (or ``graph_nnz`` in ``config``, to load a state)."""
        return cls(users.entity.size, items.entity.size, interactions, **config)

    def get_config(self) -> dict[str, Any]:
        return {
            "embedding_dim": self.embedding_dim,
            "num_layers": self.num_layers,
            "normalize": self.similarity.normalize,
            "temperature": float(1.0 / self.similarity.scale()),
            "learnable_temperature": isinstance(self.similarity.log_scale, nn.Parameter),
            "init_std": self.init_std,
            "graph_nnz": int(self.graph_values.numel()),
        }
