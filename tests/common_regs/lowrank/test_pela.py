from __future__ import annotations

import pytest
import torch
from torch import nn

from common_regs.lowrank._utils import keep_ratio_rank
from common_regs.lowrank.pela import PELA, feature_distillation


def test_init_error_is_eckart_young_tail() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(9, 7, bias=False)
    s = torch.linalg.svdvals(layer.weight.detach().double())
    pela = PELA(rank=3)
    pela.prepare(nn.Sequential(layer))
    expected = float((s[3:] ** 2).sum())
    assert abs(float(pela.weight_perturbation().detach()) - expected) < 1e-5
    assert int(torch.linalg.matrix_rank(layer.weight.detach())) == 3


def test_full_rank_student_has_zero_distillation_and_penalty() -> None:
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
    student = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
    student.load_state_dict(teacher.state_dict())
    pela = PELA(rank=4)
    pela.prepare(student)
    x = torch.randn(8, 5)
    fd = feature_distillation([student[:2](x), student(x)], [teacher[:2](x), teacher(x)])
    assert float(fd.detach()) < 1e-10
    assert float(pela.weight_perturbation().detach()) < 1e-9


def test_keep_ratio_rank_and_parameter_count() -> None:
    assert keep_ratio_rank(64, 64, 0.5) == 16  # 16·128 = 2048 = 0.5·4096
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
    with pytest.raises(ValueError, match="as many features"):
        feature_distillation([x], [])
