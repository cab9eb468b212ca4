"""Each family's tests notice when its method is switched off.

For one representative method per common_regs family, run one of that method's real behavioural tests with the
method switched off (its loss weight 0, its output zero, or the identity in place of its transform) and require
that the test then fails with an ``AssertionError``. A test that still passes is one that cannot catch the method
doing nothing. The tests are imported and called as they are (the suite also runs them unswitched); only the name
the switch names is replaced, by ``monkeypatch``, in the test module or in the library module that looks it up.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

TESTS = Path(__file__).resolve().parent


def zeroed(real: Callable[..., Any]) -> Callable[..., Any]:
    """The function with every tensor it returns multiplied by 0 (a penalty at weight 0, graph kept)."""

    def off(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        if isinstance(result, tuple):
            return tuple(r * 0 if isinstance(r, torch.Tensor) else r for r in result)
        return result * 0

    return off


def identity(real: Callable[..., Any]) -> Callable[..., Any]:
    """A transform that returns its input unchanged."""
    del real
    return lambda x, *args, **kwargs: x


def weight_zero(cls: type) -> Callable[..., Any]:
    """Build the loss term as asked, then set the weight ``RegHooks`` multiplies it by to 0."""

    def build(*args: Any, **kwargs: Any) -> Any:
        term = cls(*args, **kwargs)
        term.weight = 0.0
        return term

    return build


def forced(**overrides: Any) -> Callable[[type], Callable[..., Any]]:
    """Build the method with ``overrides`` in place of what the test asks for (e.g. ``prob=0``)."""

    def switch(cls: type) -> Callable[..., Any]:
        return lambda *args, **kwargs: cls(*args, **{**kwargs, **overrides})

    return switch


def dense_mask(real: Callable[..., Any]) -> Callable[..., Any]:
    """A mask function that keeps every weight."""
    del real
    return lambda weight, *args, **kwargs: torch.ones_like(weight)


def observed_argmax(real: Callable[..., Any]) -> Callable[..., Any]:
    """Loki off: the plain classifier, whose prediction is always one of the observed classes."""
    del real

    def scores(probs: torch.Tensor, distances: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        out = torch.full((probs.shape[0], distances.shape[0]), float("-inf"), dtype=probs.dtype)
        out[:, observed] = probs
        return out

    return scores


@dataclass(frozen=True)
class OffSwitch:
    """``test``: ``"<family>/<file>.py::<function>"``; ``name``: a global of that test module, or
    ``"<library module>:<name>"``; ``off``: builds the replacement from the real object; ``kwargs``: arguments the
    test takes that are not fixtures (parametrize values)."""

    test: str
    name: str
    off: Callable[[Any], Any]
    kwargs: dict[str, Any] = field(default_factory=dict)


SWITCHES = {
    "sparsity": OffSwitch("sparsity/test_nm_sparsity.py::test_squash_after_the_decay_ends_is_silent_and_exact",
                          "common_regs.sparsity.nm_sparsity:nm_mask", dense_mask),
    "lowrank": OffSwitch("lowrank/test_reuse_example.py::test_example_runs_and_learns",
                         "common_regs.lowrank:SorsaOrthonormalPenalty", weight_zero),
    "distill": OffSwitch("distill/test_progressive_self_distillation.py::"
                         "test_reghooks_pskd_with_distill_loss_equals_cross_entropy_at_epoch_zero",
                         "DistillLoss", weight_zero),
    "robust": OffSwitch("robust/test_conr.py::test_matches_brute_force_and_is_permutation_invariant",
                        "conr_loss", zeroed),
    "stochastic": OffSwitch("stochastic/test_scheduled_drop_path.py::"
                            "test_unbiased_and_mask_constant_over_non_batch_dims", "drop_path", identity),
    "augment": OffSwitch("augment/test_cutmix.py::test_label_weight_equals_one_minus_pasted_area", "CutMix",
                         forced(prob=0.0), {"seed": 0}),
    "representation": OffSwitch("representation/test_msb_reg.py::"
                                "test_centroid_loss_zero_for_identical_views_positive_otherwise",
                                "multiview_centroid_loss", zeroed),
    "ot": OffSwitch("ot/test_monge_gap.py::test_non_monotone_map_has_positive_gap_close_to_exact", "monge_gap",
                    zeroed),
    "dynamics": OffSwitch("dynamics/test_solver_regularizers.py::"
                          "test_local_penalty_uses_torchdiffeq_state_and_shrinks_for_easier_dynamics",
                          "local_error_penalty", zeroed),
    "generative": OffSwitch("generative/test_orex_gradient_hinge.py::test_hinge_closed_form_on_a_linear_field",
                            "common_regs.generative.orex_gradient_hinge:input_gradient_hinge", zeroed),
    "structure": OffSwitch("structure/test_colide.py::test_acyclicity_and_score_closed_forms", "dagma_acyclicity",
                           zeroed),
    "quant": OffSwitch("quant/test_elastic_quantization.py::test_fake_quantize_levels_and_error", "fake_quantize",
                       identity),
    "posthoc": OffSwitch("posthoc/test_loki.py::test_path_graph_predicts_unobserved_middle_class", "frechet_scores",
                         observed_argmax),
}


def _test_module(relative: str) -> Any:
    """The test module as pytest imports it (rootdir-less folders: by file name, its folder on ``sys.path``)."""
    path = TESTS / relative
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    return importlib.import_module(path.stem)


def test_every_family_has_a_switch() -> None:
    families = sorted(p.name for p in (TESTS.parents[1] / "common_regs").iterdir()
                      if p.is_dir() and (p / "__init__.py").exists())
    assert sorted(SWITCHES) == families


@pytest.mark.parametrize("family", sorted(SWITCHES))
def test_switching_the_method_off_fails_its_test(family: str, request: pytest.FixtureRequest,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    switch = SWITCHES[family]
    relative, function = switch.test.split("::")
    module = _test_module(relative)
    owner = importlib.import_module(switch.name.split(":")[0]) if ":" in switch.name else module
    name = switch.name.split(":")[-1]
    monkeypatch.setattr(owner, name, switch.off(getattr(owner, name)))
    test = getattr(module, function)
    fixtures = {p: request.getfixturevalue(p) for p in inspect.signature(test).parameters if p not in switch.kwargs}
    with pytest.raises(AssertionError):
        test(**fixtures, **switch.kwargs)

