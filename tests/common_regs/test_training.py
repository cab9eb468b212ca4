"""RegHooks applies each hook kind at its point of the step, in order; fit trains; the registry builds by name."""

from __future__ import annotations

import doctest

import pytest
import torch
from torch import nn

import common_regs.training
from common_regs.api import TrainContext
from common_regs.registry import build, get, list_methods, load_all, register
from common_regs.schedules import Linear
from common_regs.training import RegHooks, Weighted

EVENTS: list[str] = []


class _Recorder:
    def __init__(self, kind: str) -> None:
        self.hook_kind = self.kind = kind

    def __call__(self, arg):
        EVENTS.append(self.kind)
        if self.kind == "loss":
            # A real penalty: squared norm of the weight, gradient 2w.
            return (arg.model.weight ** 2).sum()
        return arg

    def apply(self, ctx: TrainContext) -> None:
        EVENTS.append(self.kind)
        self.grad_seen = ctx.model.weight.grad.clone()

    def prepare(self, model, optimizer=None) -> None:
        EVENTS.append(f"prepare:{self.kind}")

    def step(self, ctx: TrainContext) -> None:
        EVENTS.append(self.kind)
        with torch.no_grad():
            ctx.model.weight.zero_()  # the scheduler acts after the optimizer step


def test_hook_order_and_penalty_gradient():
    EVENTS.clear()
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0]]))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    grad_probe, mask = _Recorder("grad_transform"), _Recorder("mask_scheduler")
    hooks = RegHooks([mask, Weighted(_Recorder("loss"), 0.5), grad_probe, _Recorder("batch_transform")], model,
                     optimizer)
    x = torch.zeros(4, 2)  # zero input: the task loss has zero gradient w.r.t. the weight
    hooks.step(x, model, lambda out, batch: out.sum())
    assert EVENTS == ["prepare:mask_scheduler", "batch_transform", "loss", "grad_transform", "mask_scheduler"]
    # d/dw (0.5 · ||w||²) = w, seen by the grad transform before the step
    torch.testing.assert_close(grad_probe.grad_seen, torch.tensor([[1.0, -2.0]]))
    assert torch.count_nonzero(model.weight) == 0  # scheduler ran after the (lr 0) optimizer step
    assert hooks.last_terms == {"_Recorder": pytest.approx(5.0)}  # unweighted ||w||² before the step


def test_loss_weight_follows_its_schedule():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(2.0)
    hooks = RegHooks([Weighted(_Recorder("loss"), Linear(0.0, 1.0, 4))], model)
    ctx = TrainContext(model=model)
    values = []
    for step in range(6):
        ctx.step = step
        values.append(hooks.penalty(ctx).item())
    assert values == pytest.approx([0.0, 1.0, 2.0, 3.0, 4.0, 4.0])  # weight · ||w||² = (step/4) · 4


def test_objects_without_a_hook_kind_are_rejected():
    with pytest.raises(TypeError, match="is not a training-step hook"):
        RegHooks([object()], nn.Linear(1, 1))
    with pytest.raises(TypeError, match="only loss terms take a weight"):
        RegHooks([Weighted(_Recorder("grad_transform"), 0.5)], nn.Linear(1, 1))


def test_a_non_finite_loss_stops_the_step_before_the_parameters_change():
    model = nn.Linear(1, 1, bias=False)
    before = model.weight.detach().clone()
    hooks = RegHooks([], model, torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(FloatingPointError, match="non-finite loss nan at step 3 \\(epoch 1\\)"):
        hooks.step(torch.ones(1, 1), model, lambda out, batch: out.sum() * float("nan"), step=3, epoch=1)
    assert torch.equal(model.weight, before)


def test_fit_docstring_example_runs():
    result = doctest.testmod(common_regs.training, verbose=False)
    assert result.attempted > 0 and result.failed == 0


@register("_test_penalty", kind="loss", paper="regkit original (test fixture)", fidelity="diagnostic")
class _Penalty:
    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale

    def __call__(self, ctx: TrainContext) -> torch.Tensor:
        return self.scale * sum((p ** 2).sum() for p in ctx.model.parameters())


def test_registry_builds_by_name_and_reports_mistakes():
    penalty = build({"name": "_test_penalty", "scale": 3.0})
    assert isinstance(penalty, _Penalty) and penalty.scale == 3.0 and penalty.hook_kind == "loss"
    assert get("_test_penalty").paper.startswith("regkit original")
    with pytest.raises(KeyError, match="unknown method 'no_such_method'"):
        build({"name": "no_such_method"})
    with pytest.raises(TypeError, match="cannot build method '_test_penalty'"):
        build({"name": "_test_penalty", "sclae": 1.0})
    with pytest.raises(ValueError, match="needs a `name` key"):
        build({"scale": 1.0})
    with pytest.raises(ValueError, match="already registered"):
        register("_test_penalty", kind="loss", paper="x", fidelity="diagnostic")(type("Other", (), {}))
    with pytest.raises(ValueError, match="`kind` must be one of"):
        register("_bad", kind="regularizer", paper="x", fidelity="diagnostic")


def _reparam_names() -> list[str]:
    load_all()
    return [info.name for info in list_methods("reparam")]


@pytest.mark.parametrize("name", _reparam_names())
def test_fit_trains_the_parameters_a_reparam_creates(name: str) -> None:
    # the optimizer is built the usual way, before `prepare` creates the factors (SORSA's A, S, B, ...)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    x, y = torch.randn(32, 8), torch.randint(0, 4, (32,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    reparam = build({"name": name})
    hooks = RegHooks([reparam], model, optimizer)
    factors = reparam.trainable_parameters()
    assert factors and {id(p) for p in factors} <= {id(p) for p in hooks.new_parameters}
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert {id(p) for p in factors} <= held
    before = [p.detach().clone() for p in factors]
    for step in range(3):
        hooks.step((x, y), lambda b: model(b[0]), lambda out, b: nn.functional.cross_entropy(out, b[1]), step=step)
    unchanged = [i for i, (old, p) in enumerate(zip(before, factors, strict=True)) if torch.equal(old, p.detach())]
    assert not unchanged, f"{name}: trainable tensors {unchanged} did not change in 3 optimizer steps"


def test_without_an_optimizer_the_new_parameters_are_listed_for_one_built_after() -> None:
    from common_regs.lowrank import SORSA

    model = nn.Sequential(nn.Linear(8, 6))
    hooks = RegHooks([SORSA(rank=2)], model)
    assert [tuple(p.shape) for p in hooks.new_parameters] == [(2, 8), (2,), (6, 2)]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)  # built after RegHooks: holds them
    assert {id(p) for p in hooks.new_parameters} <= {id(p) for p in optimizer.param_groups[0]["params"]}


def test_new_parameters_take_the_settings_of_the_group_they_replace() -> None:
    from common_regs.lowrank import SORSA

    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 4))
    optimizer = torch.optim.AdamW([{"name": "body", "params": list(model[0].parameters()), "lr": 0.5,
                                    "weight_decay": 0.25},
                                   {"name": "head", "params": list(model[2].parameters())}], lr=1e-3)
    RegHooks([SORSA(rank=2, exclude=["2"])], model, optimizer)
    added = optimizer.param_groups[-1]
    assert (added["name"], added["lr"], added["weight_decay"]) == ("body/reparam", 0.5, 0.25)
    assert len(added["params"]) == 3  # A, S, B of layer 0
