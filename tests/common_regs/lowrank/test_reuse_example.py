"""The README example (docs/examples/reuse_regularizer.py) runs and learns, through its adapter factors."""

from __future__ import annotations

import re
import runpy
from pathlib import Path
from typing import Any

import pytest
from torch.nn.utils import parametrize

import common_regs.training
from common_regs.api import TrainContext
from common_regs.lowrank import SorsaOrthonormalPenalty

EXAMPLE = Path(__file__).resolve().parents[3] / "docs" / "examples" / "reuse_regularizer.py"


def _run_example(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """Run the example with a spy on ``fit``: the model's weights before and its orthonormality right after."""
    seen: dict[str, Any] = {}
    real_fit = common_regs.training.fit

    def spy(model, *args, **kwargs):  # noqa: ANN001, ANN202
        seen["before"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        losses = real_fit(model, *args, **kwargs)
        seen["orthonormality"] = float(SorsaOrthonormalPenalty()(TrainContext(model=model)).detach())
        return losses

    monkeypatch.setattr(common_regs.training, "fit", spy)
    seen["namespace"] = runpy.run_path(str(EXAMPLE), run_name="__main__")
    seen["out"] = capsys.readouterr().out
    return seen


def test_example_runs_and_learns(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    seen = _run_example(monkeypatch, capsys)
    match = re.search(r"loss ([\d.]+) -> ([\d.]+), train accuracy ([\d.]+)", seen["out"])
    assert match, "example did not print its summary"
    first, last, accuracy = map(float, match.groups())
    assert last < 0.5 * first and accuracy > 0.9
    model = seen["namespace"]["model"]
    assert not any(parametrize.is_parametrized(m) for m in model.modules())  # merged
    # the adapted layer's weight moved: only SORSA's factors can move it (its residual is frozen)
    change = (model[0].weight.detach() - seen["before"]["0.weight"]).norm() / seen["before"]["0.weight"].norm()
    assert change > 0.05, f"SORSA's factors did not train (relative weight change {float(change):.2e})"
    # the penalty keeps them orthonormal (about 8 at weight 0, 0.01 at the example's weight)
    assert seen["orthonormality"] < 0.1


def test_integration_block_is_at_most_ten_lines() -> None:
    text = EXAMPLE.read_text().split("# --- reuse a regularizer")[1].split("# -----")[0]
    code = [line for line in text.splitlines()[1:] if line.strip() and not line.strip().startswith("#")]
    assert len(code) <= 10
