"""The options of a sparse-retriever training run (:class:`SparseTrainConfig`), checked when built."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from common_regs.hook_specs import check_hook_specs
from retrieval.encoder import SparseEncoderConfig
from retrieval.mining import TEACHERS
from retrieval.pseudo_queries import PseudoQueryConfig

__all__ = ["DEFAULT_HOOKS", "HOOK_RUNTIME", "RankingLoss", "SparseAdaptConfig", "SparseTrainConfig"]

RankingLoss = Literal["infonce", "kd_kl", "kd_margin_mse"]

DEFAULT_HOOKS: tuple[dict[str, Any], ...] = ({"name": "idf_aware_flops", "weight": 0.002, "warmup_steps": 100},)
"""The regularizers of a config without ``hooks``: the paper's IDF-aware FLOPS (λ_d 0.002, quadratic warm-up)."""

HOOK_RUNTIME: tuple[str, ...] = ("idf",)
"""Runtime objects the trainer gives registered hook constructors by name (the query-side IDF table)."""


@dataclass
class SparseTrainConfig:
    """Everything ``regkit retrieval train --config FILE`` reads (YAML keys = field names).

    The file is read and checked by :func:`pipelines.run_config.load_sparse_train_config`, the run by
    :mod:`pipelines.retrieval_run`, the optimisation by :class:`retrieval.trainer.SparseTrainer`.

    Args:
        data: BEIR folder; training queries/positives from ``qrels/{split}.tsv``, candidates from its corpus.
        out_dir: output folder (``model/`` in sentence-transformers format, logs, the resolved config).
        split: training split. Default "train".
        model: :class:`retrieval.encoder.SparseEncoderConfig` fields (backbone, activation, max_seq_length,
            head_init, head_bias, idf_trainable).
        idf_json: query weights from this ``idf.json``; None = BM25 IDF of ``data``'s corpus. Default None.
        ranking_loss: ``infonce``, ``kd_kl`` or ``kd_margin_mse``. Default "kd_kl" (source: paper, ensemble KD).
        hooks: the regularizers, each ``{name: <registry name>, weight: λ, warmup_steps: T, <options>}``
            (:mod:`common_regs.hook_specs`; ``weight`` / ``warmup_steps``: a loss term's λ and its quadratic
            warm-up). Default: ``idf_aware_flops`` (:class:`retrieval.losses.IdfAwareFlops`; options ``mode``
            ``idf_aware`` / ``plain``, ``threshold`` = the ℓ0 mask τ) with λ_d 0.002 (source: authors'
            ``config_kd.yaml``) warmed up over 100 steps (authors: 200 of 2000 steps; scaled to the shorter CPU
            runs). Any registered training hook works (``dsl`` on the MLM head with ``targets``, ...); the
            retrieval adapters of ``multi_sample_dropout`` and ``ps_kd`` (:mod:`retrieval.regularizers`) act on
            the MLM head's states and the query's candidates.
        temperature: KL temperature τ. Default 1.0 (source: authors' code). The KL term is weighted by τ²
            (Hinton et al. 2015, arXiv:1503.02531, §2) so that its gradient scale does not shrink as 1/τ² against
            the FLOPS term; at τ = 1 the weight is 1.
        teacher_weights: weights of (bm25, dense) in the ensemble. Default equal (source: authors' code).
        score_scale: ensemble score scale. Default 30.0 (source: authors' ``score_scale``).
        candidates_k: depth of each retriever when mining. Default 50 (authors' l0 data: top-50).
        docs_per_query: C (1 positive + C−1 mined). Default 4.
        batch_queries: B. Default 8.
        steps: optimizer steps; 0 saves the initial model (``retrieval adapt`` then fits only the document
            mixture). Default 300.
        lr: AdamW learning rate (linear warm-up over ``warmup_steps``, then linear decay). Default 2e-5 for
            ``train_encoder=True`` (authors); the configs in ``pipelines/configs`` use a larger head-only rate.
        warmup_steps: learning-rate warm-up. Default 30.
        weight_decay: AdamW weight decay. Default 0.01 (source: authors' configs).
        train_encoder: fine-tune the transformer body too. Default False (CPU recipe).
        train_max_length: document truncation during training. Default 128 (CPU budget; indexing uses
            ``model.max_seq_length``).
        compute_dtype: dtype of the vocabulary projection, ``float32`` or ``bfloat16``. Default "float32".
        cache_dir: where backbone states, the BM25 index and mined candidates are cached. Default
            ``<out_dir>/../cache``.
        threads: torch and Lucene indexing threads (searches run on one thread, through Lucene directly). Default 2.
        seed: random seed. Default 0.
        device: torch device of the training loop (``"cuda"``, ``"cuda:1"``, ``"cpu"``); None = CPU. Default None.
            The model and every batch tensor are moved there; candidate mining and caches stay on the CPU.
        checkpoint_every: write a resumable checkpoint (``<out_dir>/checkpoints``) every this many steps; 0 = none.
            Default 0 (CPU runs last minutes; a head-only checkpoint holds ~140 MB with the Adam moments).
        projection: how the training loop computes the max-pooled vocabulary projection
            (:func:`retrieval.max_projection.splade_max_pool` ``method``): ``"loop"``, ``"dense"``, or None =
            ``"dense"`` on CUDA devices and ``"loop"`` elsewhere. Default None (regkit: the loop avoids the
            (B, L, V) tensor on CPUs; a GPU holds it easily and loses most of its time to the loop).
        document_mixture: after training, fit and save a :class:`retrieval.document_mixture.DocumentMixture`
            (BM25 terms + the model's expansion + dense-neighbour smoothing, weights distilled from the ensemble
            teacher on the training queries' candidates, :mod:`retrieval.mixture_fit`); indexes then hold the mixed
            vectors. Needs ``train_encoder: false``. Default False.
        neighbour_count: :math:`k` of the mixture's neighbour part. Default 3 (regkit choice).
    """

    data: str
    out_dir: str
    split: str = "train"
    model: dict[str, Any] = field(default_factory=dict)
    idf_json: str | None = None
    ranking_loss: RankingLoss = "kd_kl"
    hooks: list[dict[str, Any]] = field(default_factory=lambda: [dict(hook) for hook in DEFAULT_HOOKS])
    temperature: float = 1.0
    teacher_weights: list[float] = field(default_factory=lambda: [1.0, 1.0])
    score_scale: float = 30.0
    candidates_k: int = 50
    docs_per_query: int = 4
    batch_queries: int = 8
    steps: int = 300
    lr: float = 2e-5
    warmup_steps: int = 30
    weight_decay: float = 0.01
    train_encoder: bool = False
    train_max_length: int = 128
    compute_dtype: Literal["float32", "bfloat16"] = "float32"
    cache_dir: str | None = None
    threads: int = 2
    seed: int = 0
    device: str | None = None
    checkpoint_every: int = 0
    projection: Literal["loop", "dense"] | None = None
    document_mixture: bool = False
    neighbour_count: int = 3

    def __post_init__(self) -> None:
        if self.ranking_loss not in ("infonce", "kd_kl", "kd_margin_mse"):
            raise ValueError(f"`ranking_loss` must be infonce, kd_kl or kd_margin_mse, got {self.ranking_loss!r}.")
        if self.compute_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"`compute_dtype` must be float32 or bfloat16, got {self.compute_dtype!r}.")
        if self.projection not in (None, "loop", "dense"):
            raise ValueError(f"`projection` must be None, 'loop' or 'dense', got {self.projection!r}.")
        for name in ("docs_per_query", "batch_queries", "steps", "candidates_k", "train_max_length", "threads"):
            value = getattr(self, name)
            minimum = {"docs_per_query": 2, "steps": 0}.get(name, 1)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
        if isinstance(self.checkpoint_every, bool) or not isinstance(self.checkpoint_every, int) or (
                self.checkpoint_every < 0):
            raise ValueError(f"`checkpoint_every` must be an integer >= 0, got {self.checkpoint_every!r}.")
        for name in ("lr", "weight_decay", "temperature", "score_scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"`{name}` must be a number >= 0, got {value!r}.")
        if len(self.teacher_weights) != len(TEACHERS):
            raise ValueError(f"`teacher_weights` needs {len(TEACHERS)} values {TEACHERS}, got {self.teacher_weights}.")
        if isinstance(self.neighbour_count, bool) or not isinstance(self.neighbour_count, int) or (
                self.neighbour_count < 1):
            raise ValueError(f"`neighbour_count` must be an integer >= 1, got {self.neighbour_count!r}.")
        if not isinstance(self.document_mixture, bool):
            raise ValueError(f"`document_mixture` must be true or false, got {self.document_mixture!r}.")
        if self.train_encoder and self.document_mixture:
            raise ValueError("`document_mixture` needs cached backbone states: set train_encoder: false.")
        if not isinstance(self.model, dict):
            raise ValueError(f"`model` must be a mapping of SparseEncoderConfig fields, got {self.model!r}.")
        known = sorted(SparseEncoderConfig.__dataclass_fields__)
        unknown = sorted(set(self.model) - set(known))
        if unknown:
            raise ValueError(f"`model` has unknown keys {unknown}; known: {known}.")
        SparseEncoderConfig(**self.model)  # validate early
        check_hook_specs(self.hooks, domain="retrieval", runtime=HOOK_RUNTIME)
        if self.device is not None:
            try:
                torch.device(self.device)
            except (RuntimeError, TypeError):
                raise ValueError(f"`device` must be None or a torch device string such as 'cuda', got "
                                 f"{self.device!r}.") from None

    @property
    def encoder_config(self) -> SparseEncoderConfig:
        return SparseEncoderConfig(**self.model)


@dataclass
class SparseAdaptConfig(SparseTrainConfig):
    """Everything ``regkit retrieval adapt`` reads: a :class:`SparseTrainConfig` trained on pseudo-queries.

    No judgment and no query of ``data`` is read: the training queries are generated from its corpus
    (:mod:`retrieval.pseudo_queries`); ``split`` is not used. The defaults differ from ``retrieval train``'s where
    the label-free CPU recipe needs it:

    Args:
        pseudo_queries: :class:`retrieval.pseudo_queries.PseudoQueryConfig` fields (count, mix, span_min_words,
            span_max_words, keywords, keyword_min_df, remove_from_document); generated with ``seed``.
        document_mixture: Default True (the label-free recipe, ``docs/sparse_retrieval.md``).
        steps: head-training steps before the mixture is fitted. Default 0 (in the mixture, 300 head-only steps
            gave no gain over the initial head on SciFact's training queries: ``docs/sparse_retrieval.md``).
        lr: Default 1e-4 (head-only training at 1e-3 collapsed to 25-50 active terms; 1e-4 did not,
            ``docs/sparse_retrieval.md``, learning-rate probe).
        compute_dtype: Default "bfloat16" (the CPU recipe's training projection).
        checkpoint_every: Default 50 (a killed adaptation resumes; a head-only checkpoint holds ~140 MB).
    """

    pseudo_queries: dict[str, Any] = field(default_factory=dict)
    document_mixture: bool = True
    steps: int = 0
    lr: float = 1e-4
    compute_dtype: Literal["float32", "bfloat16"] = "bfloat16"
    checkpoint_every: int = 50

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.pseudo_queries, dict):
            raise ValueError(f"`pseudo_queries` must be a mapping of PseudoQueryConfig fields, got "
                             f"{self.pseudo_queries!r}.")
        unknown = sorted(set(self.pseudo_queries) - set(PseudoQueryConfig.__dataclass_fields__))
        if unknown:
            raise ValueError(f"`pseudo_queries` has unknown keys {unknown}; known: "
                             f"{sorted(PseudoQueryConfig.__dataclass_fields__)}.")
        PseudoQueryConfig(**self.pseudo_queries)  # validate early

    @property
    def pseudo_query_config(self) -> PseudoQueryConfig:
        return PseudoQueryConfig(**self.pseudo_queries)
