"""Contract suite for every parametrize-based reparametrization, generated from the registry.

Checks, for each registered ``ParametrizedReparam``: identity at init (where the method claims it), merge ≡ unmerged
forward, merge idempotent, unmerge undoes merge (same parameter objects, training continues), safe merge refuses
non-finite weights, state_dict round trip, finite gradients, and the docstring lint (the config round trip is in
``tests/common_regs/test_config_contract.py``).
"""

from __future__ import annotations

import inspect
import re

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from common_regs.lowrank._base import ParametrizedReparam
from common_regs.registry import list_methods

REPARAMS = [m for m in list_methods("reparam") if isinstance(m.obj, type) and issubclass(m.obj, ParametrizedReparam)]
MY_METHODS = [m for m in list_methods() if m.module.startswith(("common_regs.lowrank", "common_regs.quant",
                                                                 "common_regs.posthoc"))]
IDS = [m.name for m in REPARAMS]


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 4))


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(16, 6, generator=generator), torch.randint(0, 4, (16,), generator=generator)


def _train(model: nn.Module, reparam: ParametrizedReparam, steps: int = 3) -> torch.optim.Optimizer:
    x, y = _inputs()
    optimizer = torch.optim.SGD(reparam.trainable_parameters(), lr=0.05)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return optimizer


def test_registry_holds_all_reparams() -> None:
    assert {"svfit", "sorsa", "maestro", "pela", "weight_compander", "regularized_mask_tuning",
            "elastic_quantization", "quantization_noise"} <= set(IDS)


@pytest.mark.parametrize("info", REPARAMS, ids=IDS)
def test_identity_at_init(info) -> None:
    model = _model().eval()
    x, _ = _inputs()
    before = model(x)
    info.obj().prepare(model)
    after = model(x)
    if info.obj.identity_at_init:
        torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
    else:
        assert not torch.allclose(after, before, atol=1e-6), "method claims no identity at init but is identical"


@pytest.mark.parametrize("info", REPARAMS, ids=IDS)
def test_merge_equals_unmerged_and_is_idempotent(info) -> None:
    model = _model()
    reparam = info.obj()
    reparam.prepare(model)
    _train(model, reparam)
    model.eval()
    x, _ = _inputs()
    unmerged = model(x).detach()
    reparam.merge()
    assert reparam.merged and not any(parametrize.is_parametrized(m) for m in model.modules())
    merged = model(x).detach()
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=1e-5)
    weights = [p.detach().clone() for p in model.parameters()]
    reparam.merge()
    torch.testing.assert_close(model(x).detach(), merged)
    for old, new in zip(weights, model.parameters(), strict=True):
        assert torch.equal(old, new)


@pytest.mark.parametrize("info", REPARAMS, ids=IDS)
def test_unmerge_restores_parametrization_and_parameter_objects(info) -> None:
    model = _model()
    reparam = info.obj()
    reparam.prepare(model)
    optimizer = _train(model, reparam)
    model.eval()
    x, y = _inputs()
    before = model(x).detach()
    originals = [id(p) for p in reparam.trainable_parameters()]
    reparam.merge()
    reparam.unmerge()
    assert not reparam.merged and all(parametrize.is_parametrized(site.module) for site in reparam.sites)
    assert [id(p) for p in reparam.trainable_parameters()] == originals
    torch.testing.assert_close(model(x).detach(), before, atol=1e-6, rtol=1e-6)
    model.train()
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()  # the optimizer built before merge still drives the re-attached parameters
    model.eval()
    assert not torch.allclose(model(x).detach(), before)


@pytest.mark.parametrize("info", REPARAMS, ids=IDS)
def test_safe_merge_refuses_non_finite(info) -> None:
    model = _model()
    reparam = info.obj()
    reparam.prepare(model)
    site = reparam.sites[0]
    with torch.no_grad():
        site.module.parametrizations[site.tensor_name].original0.fill_(float("nan"))
    with pytest.raises(ValueError, match="non-finite"):
        reparam.merge()
    assert not reparam.merged and parametrize.is_parametrized(site.module)


@pytest.mark.parametrize("info", REPARAMS, ids=IDS)
def test_state_dict_round_trip(info) -> None:
    model = _model()
    reparam = info.obj()
    reparam.prepare(model)
    _train(model, reparam, steps=4)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    fresh_model = _model()
    fresh = info.obj.from_config(reparam.get_config_dict())
    fresh.prepare(fresh_model)
    fresh_model.load_state_dict(state)
    fresh.load_state_dict(reparam.state_dict())
    model.eval()
    fresh_model.eval()
    x, _ = _inputs()
    torch.testing.assert_close(fresh_model(x), model(x))


@pytest.mark.parametrize("info", REPARAMS, ids=IDS)
def test_gradients_are_finite(info) -> None:
    model = _model()
    reparam = info.obj()
    reparam.prepare(model)
    model.train()
    x, y = _inputs()
    nn.functional.cross_entropy(model(x), y).backward()
    grads = [p.grad for p in reparam.trainable_parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("info", REPARAMS, ids=IDS)
def test_errors_name_the_problem(info) -> None:
    with pytest.raises(ValueError, match="found no module"):
        info.obj(include=["does.not.exist"]).prepare(_model())
    with pytest.raises(ValueError, match="module_types"):
        info.obj(module_types=("lstm",)).prepare(_model())


@pytest.mark.parametrize("info", MY_METHODS, ids=[m.name for m in MY_METHODS])
def test_docstring_lint(info) -> None:
    doc = inspect.getdoc(info.obj) or ""
    for section in ("Reference:", "Math:", "Args:", "Shape:", "Returns:", "Note:", "Example:"):
        assert section in doc, f"{info.name}: docstring lacks {section}"
    assert re.search(r"arXiv:\d{4}\.\d{4,5}", doc) and re.search(r"arXiv:\d{4}\.\d{4,5}", info.paper)
    args_block = doc.split("Args:")[1].split("Shape:")[0]
    for parameter in inspect.signature(info.obj.__init__).parameters:
        if parameter != "self":
            assert re.search(rf"^\s+{parameter}:", args_block, re.M), f"{info.name}: `{parameter}` not in Args"
    assert "citation" in vars(info.obj) and "@" in info.obj.citation
