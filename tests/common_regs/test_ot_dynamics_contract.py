"""Registry-generated docstring lint and doctests of the ot / dynamics / generative / structure families.

The config round trip of these (and all other) methods is in ``tests/common_regs/test_config_contract.py``.
"""

from __future__ import annotations

import doctest
import importlib
import inspect

import pytest

from common_regs import registry

FAMILIES = ("common_regs.ot.", "common_regs.dynamics.", "common_regs.generative.", "common_regs.structure.")
METHODS = [m for m in registry.list_methods() if m.module.startswith(FAMILIES)]


def test_every_family_registers_methods() -> None:
    for family in FAMILIES:
        assert any(m.module.startswith(family) for m in METHODS), family


@pytest.mark.parametrize("info", METHODS, ids=lambda m: m.name)
def test_docstring_and_doctest(info: registry.MethodInfo) -> None:
    doc = inspect.getdoc(info.obj) or ""
    for section in ("Reference:", "Math:", "Args:", "Shape:", "Returns:", "Note:", "Example:"):
        assert section in doc, f"{info.name}: missing {section}"
    assert "arXiv:" in info.paper
    for name in inspect.signature(info.obj.__init__).parameters:
        assert name == "self" or f"{name}:" in doc, f"{info.name}: argument {name} undocumented"
    module = importlib.import_module(info.module)
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(info.obj, globs=vars(module).copy()):
        runner.run(test)
    assert runner.failures == 0
