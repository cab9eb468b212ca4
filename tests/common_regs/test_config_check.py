"""common_regs.config_check: dataclass configs from parsed YAML, checked field by field."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest
import yaml

from common_regs.config_check import ConfigError, check_config_fields


@dataclass
class _Config:
    lr: float = 0.1
    epochs: int = 1
    flag: bool = False
    name: str = "x"
    mode: Literal["a", "b"] = "a"
    limit: int | None = None
    weights: list[float] = field(default_factory=lambda: [1.0])
    extra: dict = field(default_factory=dict)


def test_valid_yaml_section_passes():
    check_config_fields(_Config, yaml.safe_load("lr: 1.0e-3\nepochs: 3\nflag: true\nmode: b\nlimit: null\n"
                                                "weights: [1, 0.5]\nextra: {k: 1}\n"), section="s")


@pytest.mark.parametrize(("text", "message"), [
    ("lr: 1e-3", "`s.lr` must be a number, got '1e-3' (str); YAML reads 1e-3 as a string"),
    ("epochs: true", "`s.epochs` must be an integer, got True (bool)"),
    ("lr: .nan", "`s.lr` must be a finite number"),
    ("mode: c", "`s.mode` must be one of ['a', 'b'], got 'c' (str)"),
    ("limit: 2.5", "`s.limit` must be an integer or null, got 2.5 (float)"),
    ("weights: 5", "`s.weights` must be a list, got 5 (int)"),
    ("weights: [1, x]", "`s.weights[1]` must be a number, got 'x' (str)"),
    ("extra: [1]", "`s.extra` must be a mapping"),
    ("flag: 'no'", "`s.flag` must be true or false, got 'no' (str)"),
    ("1: 2\nzz: 3", "unknown `s` options ['1', 'zz']"),
])
def test_bad_values_name_the_field_and_value(text, message):
    with pytest.raises(ConfigError) as caught:
        check_config_fields(_Config, yaml.safe_load(text), section="s")
    assert message in str(caught.value)
    assert isinstance(caught.value, TypeError) and isinstance(caught.value, ValueError)


def test_not_a_mapping():
    with pytest.raises(ConfigError, match="the `s` section must be a mapping"):
        check_config_fields(_Config, [1, 2], section="s")
