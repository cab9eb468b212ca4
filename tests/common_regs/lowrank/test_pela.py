from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from common_regs.lowrank._utils import keep_ratio_rank
from common_regs.lowrank.pela import PELA, feature_distillation, weight_perturbation


def test_init_is_eckart_young_and_penalty_is_the_official_inf_norm_term() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(9, 7, bias=False)
    w = layer.weight.detach().double().numpy()
    pela = PELA(rank=3)
    pela.prepare(nn.Sequential(layer))
    # independent reference in float64: W − W_3 from numpy's SVD, then (max|·| − ε)² as in the official `inf_norm`
    u, s, vh = np.linalg.svd(w, full_matrices=False)
    tail = w - (u[:, :3] * s[:3]) @ vh[:3]
    expected = (np.abs(tail).max() - 1e-3) ** 2
    assert abs(float(pela.weight_perturbation().detach()) - expected) < 1e-6 * max(expected, 1.0)
    effective = layer.weight.detach().double().numpy()
    assert abs(((effective - w) ** 2).sum() - (s[3:] ** 2).sum()) < 1e-5
    assert int(torch.linalg.matrix_rank(layer.weight.detach())) == 3


def test_weight_perturbation_hand_case_averages_layers() -> None:
    # W1 = diag(3, 1): the rank-1 SVD keeps diag(3, 0), the largest entry error is 1.
    # W2 = [[2, 0, 0], [0, 0.5, 0]]: the rank-1 SVD keeps the 2, the largest entry error is 0.5.
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(3, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[3.0, 0.0], [0.0, 1.0]]))
        model[1].weight.copy_(torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.5, 0.0]]))
    pela = PELA(rank=1)
    pela.prepare(model)
    expected = ((1.0 - 1e-3) ** 2 + (0.5 - 1e-3) ** 2) / 2
    assert float(pela.weight_perturbation().detach()) == pytest.approx(expected, rel=1e-5)
    # the pure function on the same layer with ε = 0.25: (1 − 0.25)²
    a, b = torch.tensor([[1.0], [0.0]]), torch.tensor([[3.0, 0.0]])
    original = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    assert float(weight_perturbation(a, b, original, eps=0.25)) == pytest.approx(0.75**2)


def test_feature_distillation_is_the_mean_of_per_layer_mse_and_loss_uses_official_weights() -> None:
    student = [torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 0.0, 3.0]])]
    teacher = [torch.zeros(1, 2), torch.zeros(1, 3)]
    # layer MSEs (1 + 4) / 2 = 2.5 and 9 / 3 = 3; the official L_fm averages them
    assert float(feature_distillation(student, teacher)) == pytest.approx(2.75)
    model = nn.Sequential(nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[3.0, 0.0], [0.0, 1.0]]))
    pela = PELA(rank=1, eps=0.0)
    pela.prepare(model)
    # task 0.5 + α·2.75 + β·(1 − 0)² with the official α = β = 1
    assert float(pela.loss(torch.tensor(0.5), student, teacher).detach()) == pytest.approx(4.25, rel=1e-5)
    with pytest.raises(ValueError, match="as many features"):
        feature_distillation(student, [])


def test_full_rank_student_has_zero_distillation_and_penalty_eps_squared() -> None:
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
    student = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
    student.load_state_dict(teacher.state_dict())
    pela = PELA(rank=4)
    pela.prepare(student)
    x = torch.randn(8, 5)
    fd = feature_distillation([student[:2](x), student(x)], [teacher[:2](x), teacher(x)])
    assert float(fd.detach()) < 1e-10
    # the residual is float32 round-off (< 1e-6), so the penalty is (residual − ε)² = ε² within 2·ε·1e-6
    assert abs(float(pela.weight_perturbation().detach()) - 1e-6) < 3e-9
    with pytest.raises(ValueError, match="eps"):
        PELA(eps=-1.0)


@pytest.mark.parametrize(("out_features", "in_features"), [(64, 64), (7, 9), (30, 100), (12, 5)])
def test_keep_ratio_rank_matches_official_rule(out_features: int, in_features: int) -> None:
    # official ModuleLowRank: rank = (in · out) // (c · (in + out)) with compression ratio c = 2 (DeiT default)
    official = int((in_features * out_features) // (2.0 * (in_features + out_features)))
    assert keep_ratio_rank(out_features, in_features, 0.5) == max(1, official)


def test_keep_ratio_parameter_count() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64))
    pela = PELA(keep_ratio=0.5)
    pela.prepare(model)
    assert pela.num_trainable() == 16 * 128


def test_distillation_reduces_gap_to_teacher() -> None:
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 4))
    student = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 4))
    student.load_state_dict(teacher.state_dict())
    pela = PELA(rank=2, freeze_base=True)
    pela.prepare(student)
    # anisotropic inputs: the weight-space SVD is then not the feature-space optimum, distillation can do better
    x = torch.randn(256, 8) * torch.tensor([0.1, 0.2, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0])
    optimizer = torch.optim.Adam(pela.trainable_parameters(), lr=1e-2)
    gaps = []
    for _ in range(150):
        optimizer.zero_grad()
        loss = pela.loss(torch.zeros(()), [student[:2](x), student(x)], [teacher[:2](x), teacher(x)],
                         perturbation_weight=0.0)
        gaps.append(float(loss.detach()))
        loss.backward()
        optimizer.step()
    # the SVD init minimizes the weight error; distillation lowers the feature gap below it
    assert gaps[-1] < 0.8 * gaps[0]
