"""Contract for the distill/robust/stochastic/augment/representation families, generated from the registry.

Checks every registered method of these families: docstring lint (template sections, every constructor argument
documented, a paper id, a BibTeX citation), that the family ``__all__`` is sorted, and that every docstring example
runs (doctest). The config round trip is in ``tests/common_regs/test_config_contract.py``.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil
import re

import pytest

from common_regs.registry import list_methods

FAMILIES = ("distill", "robust", "stochastic", "augment", "representation")
METHODS = [m for m in list_methods() if m.module.split(".")[1] in FAMILIES]
CLASSES = [m for m in METHODS if isinstance(m.obj, type)]
MODULES = sorted(
    f"common_regs.{family}.{info.name}"
    for family in FAMILIES
    for info in pkgutil.iter_modules(importlib.import_module(f"common_regs.{family}").__path__)
)
PAPER_ID = re.compile(r"arXiv:\d{4}\.\d{4,5}")


@pytest.mark.parametrize("info", CLASSES, ids=[m.name for m in CLASSES])
def test_class_docstring_lint(info) -> None:
    doc = inspect.getdoc(info.obj) or ""
    for section in ("Reference:", "Math:", "Args:", "Shape:", "Returns:", "Note:", "Example:"):
        assert section in doc, f"{info.name}: docstring lacks {section}"
    assert PAPER_ID.search(doc) and PAPER_ID.search(info.paper), f"{info.name}: no arXiv id"
    args_block = doc.split("Args:")[1].split("Shape:")[0]
    for parameter in inspect.signature(info.obj.__init__).parameters:
        if parameter != "self":
            assert re.search(rf"^\s+{parameter}:", args_block, re.M), f"{info.name}: `{parameter}` not in Args"
    assert "citation" in vars(info.obj) and "@" in info.obj.citation


@pytest.mark.parametrize("info", [m for m in METHODS if not isinstance(m.obj, type)], ids=lambda m: m.name)
def test_function_docstring_lint(info) -> None:
    doc = inspect.getdoc(info.obj) or ""
    for section in ("Reference:", "Math:", "Returns:", "Example:"):
        assert section in doc
    assert PAPER_ID.search(doc)


@pytest.mark.parametrize("family", FAMILIES)
def test_family_all_is_sorted_and_complete(family: str) -> None:
    package = importlib.import_module(f"common_regs.{family}")

    def isort_style(name: str) -> tuple[int, str]:  # ruff RUF022: CONSTANTS, then Classes, then functions
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert package.__all__ == sorted(package.__all__, key=isort_style)
    for name in package.__all__:
        assert hasattr(package, name)


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples_run(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
