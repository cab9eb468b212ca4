"""pipelines.config_files: the one YAML loader of regkit configs, deep merging and ``--set`` overrides."""

from __future__ import annotations

import pytest

from pipelines.config_files import ConfigError, apply_overrides, load_yaml, read_config_files


def test_merge_keys_may_be_overridden_and_aliases_become_copies(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("base: &base {epochs: 3, lr: 0.1}\ntrain:\n  <<: *base\n  lr: 0.2\nother: *base\n")
    value, sources = load_yaml(path)
    assert value == {"base": {"epochs": 3, "lr": 0.1}, "train": {"epochs": 3, "lr": 0.2},
                     "other": {"epochs": 3, "lr": 0.1}}
    assert sources.where(("train", "lr")) == f"{path}:4" and sources.where(("train", "epochs")) == f"{path}:1"
    changed = apply_overrides(value, sources, ["other.lr=0.5"])
    assert changed["base"]["lr"] == 0.1 and changed["other"]["lr"] == 0.5  # the alias was a copy, not a reference
    assert sources.where(("other", "lr")) == "--set other.lr=0.5"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: &a [*a]\n", ":1: a YAML alias refers to a value that contains it"),
        ("x: {1: a, 0x1: b}\n", ":1: key `1` is given twice"),
        ("? [a, b]\n: 1\n", ":1: a key must be a plain value"),
        ("a: [\n", ": not valid YAML"),
        ("a: \x00\n", ": not valid YAML"),
    ],
)
def test_what_the_safe_loader_accepts_silently_or_misreports_is_one_line_naming_the_file(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_yaml(path)
    assert str(caught.value).startswith(f"{path}") and message in str(caught.value), str(caught.value)


def test_files_merge_in_order_and_overrides_need_mappings_on_the_way(tmp_path):
    base, user = tmp_path / "base.yaml", tmp_path / "user.yaml"
    base.write_text("ssl: cfm\ntrain: {lr: 0.1, epochs: 3}\n")
    user.write_text("train: {lr: 0.2}\n")
    raw, sources = read_config_files(base, user)
    assert raw == {"ssl": "cfm", "train": {"lr": 0.2, "epochs": 3}}
    assert sources.where(("train", "lr")) == f"{user}:1" and sources.where(("train", "epochs")) == f"{base}:2"
    with pytest.raises(ConfigError, match=r"--set ssl.alpha=0.3: `ssl` is 'cfm', not a mapping"):
        apply_overrides(raw, sources, ["ssl.alpha=0.3"])  # replacing it would silently drop the mode
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_overrides(raw, sources, ["train.lr"])
