"""Config contract of every registered method class, generated from the registry.

Every class registered with ``@register`` (common_regs, and the domain methods that recsys and retrieval register)
is checked, so a new method is covered as soon as it registers; its test instance comes from its own
``example_kwargs()``, declared next to the class, never from a table here:

* it uses the one ``get_config_dict`` (:class:`common_regs.api.ConfigFromKeys`), no per-class variant;
* ``config_keys`` and ``runtime_keys`` are disjoint and together are exactly the constructor's parameters;
* ``get_config_dict()`` holds exactly ``config_keys``, survives ``json.dumps`` / ``json.loads`` unchanged, and
  ``from_config(<the JSON config>, **runtime objects)`` has an equal config;
* where the class has state, ``state_dict()`` written as a checksummed checkpoint and read back with the
  weights-only loader loads into an object rebuilt under another random seed (mask schedulers and
  reparametrizations prepared on a small model first), which then reports an equal state. Resuming after
  training steps is checked per family (``sparsity/test_mask_scheduler_contract.py``,
  ``lowrank/test_reparam_contract.py``) and in the methods' own tests.
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import common_regs
from common_regs import registry
from common_regs.api import ConfigFromKeys
from common_regs.checkpoint import save_with_checksum, verify_checksum
from common_regs.safe_load import load_tensors

REPO = Path(__file__).resolve().parents[2]
DOMAINS = ("recsys", "retrieval")


def _import_registering_modules(package: str) -> None:
    """Import the modules of ``package`` that register methods (and nothing else: no Java, no distributed code)."""
    for path in sorted((REPO / package).rglob("*.py")):
        if "@register(" in path.read_text(encoding="utf-8"):
            importlib.import_module(".".join(path.relative_to(REPO).with_suffix("").parts))


registry.load_all()
for _package in DOMAINS:
    _import_registering_modules(_package)
CLASSES = [info for info in registry.list_methods() if isinstance(info.obj, type)]


def _parameters(cls: type) -> set[str]:
    return {name for name in inspect.signature(cls.__init__).parameters if name != "self"}


def _build(info: registry.MethodInfo) -> tuple[Any, dict[str, Any]]:
    """The example instance and its runtime (non-config) constructor arguments."""
    kwargs = info.obj.example_kwargs()
    return info.obj(**kwargs), {key: kwargs[key] for key in info.obj.runtime_keys if key in kwargs}


def _assert_same(actual: Any, expected: Any, where: str) -> None:
    if isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor) and torch.equal(actual, expected), f"{where}: tensors differ"
    elif isinstance(expected, dict):
        assert isinstance(actual, dict) and actual.keys() == expected.keys(), f"{where}: keys differ"
        for key, value in expected.items():
            _assert_same(actual[key], value, f"{where}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert isinstance(actual, (list, tuple)) and len(actual) == len(expected), f"{where}: lengths differ"
        for position, (left, right) in enumerate(zip(actual, expected, strict=True)):
            _assert_same(left, right, f"{where}[{position}]")
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


def _prepared(info: registry.MethodInfo, method: Any) -> Any:
    """Mask schedulers and reparametrizations keep their state in a model: prepare them on a small one."""
    if info.kind in ("mask_scheduler", "reparam"):
        model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
        if hasattr(method, "apply_transform"):  # methods that swap layers before masking them (Sparse-IFT)
            method.apply_transform(model)
        method.prepare(model)
    return method


def test_the_registry_covers_every_family_and_domain() -> None:
    families = {info.name for info in pkgutil.iter_modules(common_regs.__path__) if info.ispkg}
    covered = {info.module.split(".")[1] for info in CLASSES if info.module.startswith("common_regs.")}
    assert families == covered, f"families without a registered class: {sorted(families - covered)}"
    assert set(DOMAINS) <= {info.module.split(".")[0] for info in CLASSES}


@pytest.mark.parametrize("info", CLASSES, ids=[info.name for info in CLASSES])
def test_config_keys_are_the_constructor_parameters(info: registry.MethodInfo) -> None:
    cls = info.obj
    assert issubclass(cls, ConfigFromKeys), f"{info.name}: inherit common_regs.api.ConfigFromKeys"
    assert cls.get_config_dict is ConfigFromKeys.get_config_dict, f"{info.name}: overrides get_config_dict"
    config, runtime = set(cls.config_keys), set(cls.runtime_keys)
    assert not config & runtime, f"{info.name}: keys both config and runtime: {sorted(config & runtime)}"
    assert len(config) == len(cls.config_keys), f"{info.name}: duplicate config_keys"
    params = _parameters(cls)
    assert config | runtime == params, (
        f"{info.name}: constructor parameters not declared: {sorted(params - config - runtime)}; "
        f"declared but not parameters: {sorted((config | runtime) - params)}"
    )


@pytest.mark.parametrize("info", CLASSES, ids=[info.name for info in CLASSES])
def test_config_round_trips_through_json(info: registry.MethodInfo) -> None:
    method, runtime = _build(info)
    config = method.get_config_dict()
    assert list(config) == list(info.obj.config_keys)
    loaded = json.loads(json.dumps(config))
    assert loaded == config, f"{info.name}: config is not plain JSON values: {config!r}"
    rebuilt = info.obj.from_config(loaded, **runtime)
    assert rebuilt.get_config_dict() == config, f"{info.name}: the rebuilt method has another config"


STATEFUL = [info for info in CLASSES if hasattr(info.obj, "state_dict")]


@pytest.mark.parametrize("info", STATEFUL, ids=[info.name for info in STATEFUL])
def test_state_round_trips_through_a_checkpoint_file(info: registry.MethodInfo, tmp_path: Path) -> None:
    torch.manual_seed(0)
    method, runtime = _build(info)
    method = _prepared(info, method)
    state = method.state_dict()
    path = save_with_checksum(tmp_path / "state.pt", lambda tmp: torch.save(state, tmp))
    verify_checksum(path)
    torch.manual_seed(1)  # randomly initialised state (weights, masks, buffers) now differs until loaded
    rebuilt = _prepared(info, info.obj.from_config(method.get_config_dict(), **runtime))
    rebuilt.load_state_dict(load_tensors(path, what="method state"))
    _assert_same(rebuilt.state_dict(), state, info.name)
