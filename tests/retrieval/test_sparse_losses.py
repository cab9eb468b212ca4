"""IDF-aware FLOPS, MarginMSE, in-batch InfoNCE and the min-max ensemble teacher, against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from common_regs.api import TrainContext
from common_regs.schedules import QuadraticWarmup
from retrieval.losses import IdfAwareFlops, MarginMSE, flops_penalty, idf_scores, inbatch_infonce, margin_mse
from retrieval.mining import Candidates, ensemble_run


def _ctx(**outputs) -> TrainContext:
    return TrainContext(model=torch.nn.Identity(), outputs=outputs)


def test_idf_aware_flops_equals_hand_computed_value() -> None:
    w = torch.tensor([[1.0, 0.0, 2.0], [3.0, 1.0, 0.0]])
    # column means (2, 0.5, 1) -> 4 + 0.25 + 1
    assert float(IdfAwareFlops()(_ctx(doc_embeddings=w))) == pytest.approx(5.25)
    idf = torch.tensor([0.5, 2.0, 1.0])
    # plain: means of idf * w = (1, 1, 1) -> 3; the IDF-aware value ignores idf
    assert float(IdfAwareFlops(idf=idf, mode="plain")(_ctx(doc_embeddings=w))) == pytest.approx(3.0)
    assert float(IdfAwareFlops(idf=idf)(_ctx(doc_embeddings=w))) == pytest.approx(5.25)


def test_l0_mask_penalises_only_documents_above_threshold() -> None:
    w = torch.tensor([[1.0, 0.0, 2.0], [3.0, 1.0, 0.0], [0.0, 0.0, 4.0]])  # active terms 2, 2, 1
    # threshold 1: third document (1 active term) masked, mean still over N = 3: (4/3, 1/3, 2/3)
    assert float(flops_penalty(w, threshold=1)) == pytest.approx(16 / 9 + 1 / 9 + 4 / 9)
    assert float(flops_penalty(w, threshold=2)) == 0.0  # nobody has more than 2 active terms
    assert float(flops_penalty(w, threshold=0)) == pytest.approx(float(flops_penalty(w)))


def test_common_token_gradient_relative_to_ranking_is_larger_than_rare() -> None:
    """The property IDF-aware FLOPS exists for: common tokens are suppressed harder, relative to ranking."""
    idf = torch.tensor([0.2, 4.0])  # token 0 common, token 1 rare
    query = idf[None]  # the query contains both tokens
    docs = torch.tensor([[1.0, 1.0], [0.5, 0.5]], requires_grad=True)  # positive, negative: equal weights

    def ratios(mode: str) -> torch.Tensor:
        rank = inbatch_infonce(idf_scores(query, docs), torch.tensor([0]))
        g_rank = torch.autograd.grad(rank, docs)[0][0]
        flops = IdfAwareFlops(idf=idf, mode=mode).compute(docs)
        g_flops = torch.autograd.grad(flops, docs)[0][0]
        return g_flops.abs() / g_rank.abs()

    aware = ratios("idf_aware")
    assert aware[0] > aware[1]
    # closed form with equal weights: ranking grad ∝ idf, FLOPS grad equal -> ratio ∝ 1/idf
    assert float(aware[0] / aware[1]) == pytest.approx(20.0)
    plain = ratios("plain")  # FLOPS on idf·w: grad ∝ idf² -> ratio ∝ idf, the asymmetry is gone (reversed)
    assert float(plain[0] / plain[1]) == pytest.approx(1 / 20.0)


def test_flops_warmup_is_quadratic() -> None:
    schedule = QuadraticWarmup(0.05, 200)
    assert schedule(0) == 0.0
    assert schedule(100) == pytest.approx(0.05 * 0.25)
    assert schedule(200) == schedule(5000) == pytest.approx(0.05)


def test_margin_mse_hand_case() -> None:
    student = torch.tensor([[3.0, 1.0, 2.0]])
    teacher = torch.tensor([[30.0, 20.0, 30.0]])
    # margins: student (2, 1), teacher (10, 0) -> ((2-10)^2 + (1-0)^2) / 2
    assert float(margin_mse(student, teacher)) == pytest.approx(32.5)
    ctx = TrainContext(model=torch.nn.Identity(), outputs={"logits": student}, extras={"targets": teacher})
    assert float(MarginMSE()(ctx)) == pytest.approx(32.5)
    with pytest.raises(ValueError, match="targets"):
        MarginMSE()(TrainContext(model=torch.nn.Identity(), outputs={"logits": student}))


def test_infonce_is_cross_entropy_over_the_batch() -> None:
    scores = torch.tensor([[2.0, 0.0, 1.0, 0.0], [0.0, 1.0, 3.0, 0.0]])
    expected = -(math.log(math.exp(2) / (math.exp(2) + 1 + math.e + 1)) + math.log(
        math.exp(3) / (1 + math.e + math.exp(3) + 1))) / 2
    assert float(inbatch_infonce(scores, torch.tensor([0, 2]))) == pytest.approx(expected)


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="`mode`"):
        IdfAwareFlops(mode="sparse")
    with pytest.raises(ValueError, match="needs `idf`"):
        IdfAwareFlops(mode="plain")
    with pytest.raises(ValueError, match="`threshold`"):
        IdfAwareFlops(threshold=-1)
    with pytest.raises(ValueError, match="doc_embeddings"):
        IdfAwareFlops()(_ctx(logits=torch.zeros(1, 2)))
    with pytest.raises(ValueError, match="token_weights"):
        flops_penalty(torch.ones(2, 3), token_weights=torch.ones(2))


def test_minmax_ensemble_targets_match_hand_computation_with_a_tied_query() -> None:
    candidates = Candidates(
        docs={"q1": ["a", "b", "c"], "q2": ["a", "b", "c"], "q3": ["x"]},
        scores={
            "bm25": {"q1": [12.0, 30.0, 3.0], "q2": [5.0, 5.0, 5.0], "q3": [7.0]},  # q2: BM25 ties everywhere
            "dense": {"q1": [0.9, 0.5, 0.1], "q2": [0.2, 0.6, 0.4], "q3": [0.3]},
        },
    )
    run = ensemble_run(candidates)  # equal weights, scale 30
    # q1: bm25 -> (1/3, 1, 0), dense -> (1, 0.5, 0): 30 * mean
    assert run["q1"] == pytest.approx({"a": 20.0, "b": 22.5, "c": 0.0})
    # q2: the tied teacher carries no preference (constant row); the order is the dense teacher's
    q2 = run["q2"]
    assert q2["b"] - q2["c"] == pytest.approx(30 * 0.5 * 0.5) and q2["c"] - q2["a"] == pytest.approx(30 * 0.5 * 0.5)
    assert sorted(q2, key=q2.get, reverse=True) == ["b", "c", "a"]
    assert set(run["q3"]) == {"x"}  # a single candidate: both teachers tie, the document is still returned
    weighted = ensemble_run(candidates, weights=[0.0, 1.0])
    assert weighted["q1"] == pytest.approx({"a": 30.0, "b": 15.0, "c": 0.0})
    matrix, mask = candidates.teacher_matrix(["q1", "q3"])
    assert matrix.shape == (2, 2, 3) and mask.tolist() == [[True, True, True], [True, False, False]]
