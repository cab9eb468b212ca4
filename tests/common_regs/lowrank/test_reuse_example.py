"""The README example (docs/examples/reuse_regularizer.py) runs and learns."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

from torch.nn.utils import parametrize

EXAMPLE = Path(__file__).resolve().parents[3] / "docs" / "examples" / "reuse_regularizer.py"


def test_example_runs_and_learns(capsys) -> None:
    namespace = runpy.run_path(str(EXAMPLE), run_name="__main__")
    match = re.search(r"loss ([\d.]+) -> ([\d.]+), train accuracy ([\d.]+)", capsys.readouterr().out)
    assert match, "example did not print its summary"
    first, last, accuracy = map(float, match.groups())
    assert last < 0.5 * first and accuracy > 0.9
    assert not any(parametrize.is_parametrized(m) for m in namespace["model"].modules())  # merged


def test_integration_block_is_at_most_ten_lines() -> None:
    text = EXAMPLE.read_text().split("# --- reuse a regularizer")[1].split("# -----")[0]
    code = [line for line in text.splitlines()[1:] if line.strip() and not line.strip().startswith("#")]
    assert len(code) <= 10
