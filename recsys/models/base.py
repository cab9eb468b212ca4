"""What every recommender in regkit provides, so one trainer, one loss module and one FAISS server serve them all.

A model maps a :class:`RecBatch` (user, positive item and optional negative item indices, plus torchrec feature
inputs filled in by :meth:`Recommender.featurize`) to a :class:`RecOutput` of embeddings. Scores are
``scale · ⟨user, item⟩`` (:class:`Similarity`); the FAISS index holds :meth:`Recommender.item_embeddings` and
queries with :meth:`Recommender.user_embeddings`, so inner-product search ranks exactly as training scores.
"""

from __future__ import annotations

import abc
import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from recsys.data import Interactions
    from recsys.features import FeatureTable

logger = logging.getLogger(__name__)

__all__ = ["RecBatch", "RecOutput", "Recommender", "Similarity"]


@dataclass
class RecBatch:
    """One training batch.

    Args:
        users: ``(B,)`` user indices. items: ``(B,)`` positive item indices. rows: ``(B,)`` log row positions.
        negatives: ``(B, N)`` sampled negative item indices, or ``None`` (in-batch negatives only).
        user_features / item_features / negative_features: torchrec ``KeyedJaggedTensor`` inputs of the towers
            (``negative_features`` covers the ``B·N`` negatives row-major); ``None`` for id-only models.
            A :class:`~common_regs.api.BatchTransform` may rewrite them (e.g. SSL feature masking).
    """

    users: Tensor
    items: Tensor
    rows: Tensor
    negatives: Tensor | None = None
    user_features: Any = None
    item_features: Any = None
    negative_features: Any = None
    extras: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.users.numel())

    def replace(self, **changes: Any) -> RecBatch:
        return replace(self, **changes)


@dataclass
class RecOutput:
    """Embeddings of a batch: ``user`` ``(B, D)``, ``item`` ``(B, D)``, ``negatives`` ``(B, N, D)`` or ``None``.

    ``scale`` multiplies inner products into logits (``1/τ`` for cosine models). ``regularized`` lists the raw
    (layer-0) embedding rows the batch touched, for L2 penalties on the batch (:class:`recsys.losses.EmbeddingL2`).
    """

    user: Tensor
    item: Tensor
    scale: Tensor | float
    negatives: Tensor | None = None
    regularized: list[Tensor] = field(default_factory=list)


class Similarity(nn.Module):
    """Score head: optional L2 normalisation and a fixed or learnable temperature τ, logits = ⟨u, i⟩ / τ.

    With ``normalize`` the score is cosine similarity divided by τ (Yi et al., "Sampling-Bias-Corrected Neural
    Modeling for Large Corpus Item Recommendations", RecSys 2019, §4: normalised embeddings with a temperature).
    A learnable τ is stored as ``log(1/τ)`` and clamped to ``1/τ ≤ 100`` (the CLIP convention).

    Args:
        normalize: L2-normalise embeddings before the inner product.
        temperature: τ > 0. learnable: whether τ is trained.
    """

    max_scale: ClassVar[float] = 100.0

    def __init__(self, normalize: bool = True, temperature: float = 0.1, learnable: bool = False) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"`temperature` must be > 0, got {temperature}.")
        self.normalize = normalize
        log_scale = torch.tensor(math.log(1.0 / temperature))
        if learnable:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)
        self._fixed_scale: float | None = None

    def embed(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=-1) if self.normalize else x

    def scale(self) -> Tensor | float:
        """``1/τ``: a tensor when τ is learnable, else the same float32 value as a Python float.

        A fixed scale is read once (not recomputed, and not multiplied in at all when it is 1, in every step).
        """
        if isinstance(self.log_scale, nn.Parameter):
            return self.log_scale.clamp(max=math.log(self.max_scale)).exp()
        if self._fixed_scale is None:
            self._fixed_scale = float(self.log_scale.clamp(max=math.log(self.max_scale)).exp())
        return self._fixed_scale

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._fixed_scale = None  # the buffer may change
        super()._load_from_state_dict(*args, **kwargs)


R = TypeVar("R", bound="Recommender")

MODELS: dict[str, type[Recommender]] = {}
"""The models a run config can name (``model.name``), filled by :func:`register_model`."""


def register_model(cls: type[R]) -> type[R]:
    """Class decorator making a :class:`Recommender` subclass available as ``model.name`` = its ``name``.

    Explicit rather than ``Recommender.__subclasses__()``: wrappers such as
    ``recsys.distributed.ShardedTwoTower`` subclass a model under its name and must not replace it.
    """
    if cls.name in MODELS:
        raise ValueError(f"a recommender named {cls.name!r} is already registered ({MODELS[cls.name].__qualname__}).")
    MODELS[cls.name] = cls
    return cls


class Recommender(nn.Module, abc.ABC):
    """Base class of the regkit recommenders (two-tower, MF-BPR, LightGCN).

    Subclasses set ``name`` and implement :meth:`forward`, :meth:`user_embeddings`, :meth:`item_embeddings`
    and :meth:`get_config`. ``num_users`` / ``num_items`` count known ids; each id table has one more row, the
    out-of-vocabulary bucket (index ``num_users`` / ``num_items``).
    """

    name: ClassVar[str]
    #: True when the user tower can embed a user from features alone (cold start without popularity fallback).
    has_user_features: bool = False
    #: True for models fitted in one pass instead of by the trainer (:mod:`recsys.models.closed_form`).
    closed_form: ClassVar[bool] = False

    def __init__(self, num_users: int, num_items: int, similarity: Similarity) -> None:
        super().__init__()
        if num_users < 1 or num_items < 1:
            raise ValueError(f"`num_users` and `num_items` must be >= 1, got {num_users} and {num_items}.")
        self.num_users = num_users
        self.num_items = num_items
        self.similarity = similarity

    def check_interactions(self, interactions: Interactions) -> None:
        """Refuse training interactions indexed by other vocabularies than the model's."""
        if (interactions.num_users, interactions.num_items) != (self.num_users, self.num_items):
            raise ValueError(
                f"{self.name}: `interactions` index {interactions.num_users} users / {interactions.num_items} "
                f"items, but the model has {self.num_users} / {self.num_items}."
            )

    def featurize(self, batch: RecBatch) -> RecBatch:
        """Fill the batch's feature inputs (two-tower); id-only models return it unchanged."""
        return batch

    @abc.abstractmethod
    def forward(self, batch: RecBatch) -> RecOutput:
        """Embeddings of the batch's users, positive items and negatives (already normalised if configured)."""

    @abc.abstractmethod
    def user_embeddings(self, users: Tensor, *, cold: Tensor | None = None) -> Tensor:
        """``(U, D)`` query vectors for user indices; ``cold`` marks users to embed without their id."""

    @abc.abstractmethod
    def item_embeddings(self) -> Tensor:
        """``(num_items, D)`` candidate vectors of every known item (row = item index)."""

    @abc.abstractmethod
    def get_config(self) -> dict[str, Any]:
        """JSON-serialisable constructor arguments (sizes excluded), so ``build_model`` can rebuild the model."""

    @classmethod
    def from_data(
        cls,
        config: Mapping[str, Any],
        *,
        users: FeatureTable,
        items: FeatureTable,
        interactions: Interactions | None = None,
    ) -> Recommender:
        """The model over these vocabularies, with constructor keywords ``config`` (id-only models: sizes only).

        A model that needs more of the data (features, the training graph) overrides this.
        """
        return cls(users.entity.size, items.entity.size, **config)

    def sparse_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """Embedding-table parameters (the "sparse" optimizer group); everything else is dense."""
        seen: set[int] = set()
        for module_name, module in self.named_modules():
            if isinstance(module, nn.Embedding | nn.EmbeddingBag):
                for name, parameter in module.named_parameters(prefix=module_name, recurse=False):
                    if id(parameter) not in seen:
                        seen.add(id(parameter))
                        yield name, parameter
