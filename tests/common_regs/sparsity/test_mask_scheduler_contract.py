"""Family contract for every registered mask scheduler, generated from the registry.

After every optimizer step: masks are binary with the exact expected count (and N:M group pattern), pruned entries
of hard masks are zero in the raw weights and in the Adam state, frozen entries (``semantics="freeze"``) keep their
values bit-exactly; state_dict round-trips (train k steps, save, restore into fresh objects, continue: identical
masks and weights). The config round trip is in ``tests/common_regs/test_config_contract.py``. A new scheduler
registered later (e.g. DSL) is picked up automatically; the overrides below only shorten schedules so that every
phase is reached within a few steps.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn

from common_regs.registry import build, list_methods

CONTRACT_OVERRIDES: dict[str, dict[str, Any]] = {
    "nm_sparsity": {"n": 2, "m": 4, "decay": "linear", "decay_coef": 0.5, "dense_steps": 1},
    "iss_p": {"sparsity": 0.75, "shrink_ratio": 0.9, "hard_prune_step": 4},
    "dsl": {"density": 0.25, "update_interval": 2, "total_steps": 10},  # prune/regrow within the contract's steps
    "magnitude_pruning": {"sparsity": 0.8, "prune_step": 2},
    "sparse_ift": {"transform": "factorized", "sparsity": 0.75, "update_every": 2, "update_until": 10},
    "sara": {"trainable_fraction": 0.2, "progressive_step": 3, "min_dim": 4, "nuclear_weight": 1e-3},
    "group_envelope": {"k": 0.5, "prox_step": 0.5},
}
SCHEDULERS = [info.name for info in list_methods("mask_scheduler")]
STEPS = 6


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))


def _setup(name: str, seed: int = 0) -> tuple[nn.Module, Any, torch.optim.Optimizer]:
    model = _model(seed)
    scheduler = build({"name": name, **CONTRACT_OVERRIDES.get(name, {})})
    if hasattr(scheduler, "apply_transform"):
        scheduler.apply_transform(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    scheduler.prepare(model, optimizer)
    extra_terms = [scheduler.nuclear_term()] if hasattr(scheduler, "nuclear_term") else []
    scheduler._contract_terms = extra_terms  # loss terms the method adds, if any
    return model, scheduler, optimizer


def _train_step(model: nn.Module, scheduler: Any, optimizer: torch.optim.Optimizer, step: int) -> None:
    generator = torch.Generator().manual_seed(100 + step)
    x = torch.randn(32, 16, generator=generator)
    y = torch.randint(0, 8, (32,), generator=generator)
    loss = nn.functional.cross_entropy(model(x), y)
    for term in scheduler._contract_terms:
        loss = loss + term.weight * term(None)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step(None)


def _check_nm(mask: torch.Tensor, n: int, m: int) -> None:
    groups = mask.reshape(-1, m).sum(1)
    assert torch.equal(groups, torch.full_like(groups, float(n))), f"N:M pattern {n}:{m} violated"


def _check_invariants(
    scheduler: Any, before: dict[str, torch.Tensor], before_masks: dict[str, torch.Tensor], optimizer: Any
) -> None:
    pattern = scheduler.nm_pattern()
    for name, mask in scheduler.masks.items():
        assert torch.all((mask == 0) | (mask == 1)), f"{name}: mask is not binary"
        if scheduler.exact_density:
            assert int(mask.sum()) == scheduler.expected_nnz(name), f"{name}: wrong number of ones"
        if pattern is not None:
            _check_nm(mask, *pattern)
        raw = scheduler.original(name).detach()
        state = optimizer.state.get(scheduler.original(name), {})
        moments = [v for v in state.values() if torch.is_tensor(v) and v.shape == raw.shape]
        off = mask == 0
        if scheduler.semantics == "prune":
            if scheduler.fill == 0.0:
                assert torch.all(scheduler.effective(name).detach()[off] == 0), f"{name}: pruned effective weight != 0"
            if scheduler.is_hard:
                assert torch.all(raw[off] == 0), f"{name}: pruned raw weight != 0"
                for moment in moments:
                    assert torch.all(moment[off] == 0), f"{name}: optimizer state not zero at pruned entries"
        else:  # frozen under the mask in force during the step; state is zero under the current mask
            frozen = before_masks[name] == 0
            assert torch.equal(raw[frozen], before[name][frozen]), f"{name}: frozen weights moved"
            for moment in moments:
                assert torch.all(moment[off] == 0), f"{name}: optimizer state not zero at frozen entries"


def test_registry_has_the_sparsity_schedulers() -> None:
    assert {"nm_sparsity", "iss_p", "sparse_ift", "sara", "group_envelope", "magnitude_pruning"} <= set(SCHEDULERS)


@pytest.mark.parametrize("name", SCHEDULERS)
def test_invariants_after_every_step(name: str) -> None:
    model, scheduler, optimizer = _setup(name)
    hard_seen = False
    for step in range(STEPS):
        before = {n: scheduler.original(n).detach().clone() for n in scheduler.masks}
        before_masks = {n: m.clone() for n, m in scheduler.masks.items()}
        _train_step(model, scheduler, optimizer, step)
        _check_invariants(scheduler, before, before_masks, optimizer)
        hard_seen |= scheduler.is_hard
    if name in ("iss_p", "magnitude_pruning", "sparse_ift"):
        assert hard_seen, f"{name} never reached its hard-mask phase in {STEPS} steps"
    if name == "nm_sparsity":
        assert scheduler.fill == 0.0 and scheduler.nm_pattern() == (2, 4)


@pytest.mark.parametrize("name", SCHEDULERS)
def test_state_dict_round_trip(name: str) -> None:
    model, scheduler, optimizer = _setup(name)
    for step in range(3):
        _train_step(model, scheduler, optimizer, step)
    saved = (copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()), scheduler.state_dict())

    fresh_model, fresh_scheduler, fresh_optimizer = _setup(name, seed=1)  # different init: everything must load
    fresh_model.load_state_dict(saved[0])
    fresh_optimizer.load_state_dict(saved[1])
    fresh_scheduler.load_state_dict(saved[2])
    for name_, mask in scheduler.masks.items():
        assert torch.equal(fresh_scheduler.masks[name_], mask)
    for step in range(3, 5):
        _train_step(model, scheduler, optimizer, step)
        _train_step(fresh_model, fresh_scheduler, fresh_optimizer, step)
    for name_, mask in scheduler.masks.items():
        assert torch.equal(fresh_scheduler.masks[name_], mask), f"{name_}: masks diverged after resume"
    for (k, v), (k2, v2) in zip(model.state_dict().items(), fresh_model.state_dict().items(), strict=True):
        assert k == k2
        torch.testing.assert_close(v2, v, rtol=0, atol=0)


def test_squash_leaves_plain_sparse_weights() -> None:
    model, scheduler, optimizer = _setup("magnitude_pruning")
    for step in range(3):
        _train_step(model, scheduler, optimizer, step)
    masks = scheduler.masks
    scheduler.squash()
    assert set(model.state_dict()) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    for name, mask in masks.items():
        assert torch.all(model.get_parameter(name).detach()[mask == 0] == 0)


def test_prepare_twice_and_bad_targets_are_rejected() -> None:
    model, scheduler, optimizer = _setup("magnitude_pruning")
    with pytest.raises(ValueError, match="already prepared"):
        scheduler.prepare(model, optimizer)
    other = build({"name": "magnitude_pruning", "targets": ["nope.weight"]})
    with pytest.raises(ValueError, match="nope"):
        other.prepare(_model())


def test_module_types_are_layer_names_a_config_can_hold() -> None:
    model = nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 4))
    scheduler = build({"name": "magnitude_pruning", "module_types": ["embedding"]})
    scheduler.prepare(model)
    assert list(scheduler.masks) == ["0.weight"]
    assert scheduler.get_config_dict()["module_types"] == ["embedding"]
    with pytest.raises(ValueError, match="`module_types` entries must be in"):
        build({"name": "nm_sparsity", "module_types": ["lstm"]})
