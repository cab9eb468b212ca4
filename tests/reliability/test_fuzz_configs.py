"""Property tests of configuration loading: ``--config FILE`` of every job command, and the recsys ``train:`` section.

* ``--config`` (``pipelines.cli._config``): a YAML file of option values for any command that takes one. Valid
  values become exactly the command's parameters; unknown keys, a list or mapping for a single-valued option,
  nested values in a list, a boolean for a number, a non-numeric string for a number, a fraction for an integer, a
  non-boolean for a flag, or bytes that are not YAML raise ``typer.BadParameter`` naming the file and the key.
* the recsys run config's ``train:`` section (:class:`pipelines.run_config.RecsysRunConfig`, built into
  ``recsys.trainer.TrainConfig``): valid sections build exactly that config; unknown keys (any YAML key type),
  wrong types (YAML's ``1e-3`` string, booleans for numbers, lists, mappings, null for a required value),
  non-finite floats and out-of-range values raise a ``ConfigError`` (a ``ValueError``) naming ``train.<field>``.
* ``pipelines.run_config.load_recsys_config`` and ``load_sparse_train_config``: bad YAML, deep nesting, non-string
  keys and wrong value types are a ``ValueError`` naming the file (or the key).
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from fuzz_support import FUZZ, assert_names_some_line, ids
from hypothesis import example, given
from hypothesis import strategies as st

from pipelines.cli import app, main
from pipelines.cli._config import _load_defaults
from pipelines.run_config import ConfigError, load_recsys_config, load_sparse_train_config, recsys_config
from recsys.trainer import TrainConfig


def _config_commands() -> dict[str, Any]:
    """Every command whose ``--config`` is the shared YAML option (walks the real Typer app's click commands)."""
    found: dict[str, Any] = {}

    def walk(group: Any, prefix: str) -> None:
        for name, command in getattr(group, "commands", {}).items():
            path = f"{prefix} {name}".strip()
            if any(p.name == "config" and getattr(p.callback, "__wrapped__", None) is _load_defaults
                   for p in command.params):
                found[path] = command
            walk(command, path)

    walk(typer.main.get_command(app), "")
    return found


COMMANDS = _config_commands()
assert {"beir eval", "ab compare", "ab offpolicy", "retrieval index", "data beir"} <= set(COMMANDS), sorted(COMMANDS)
WORDS = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8)
VALID = {
    int: st.integers(-(10**6), 10**6),
    float: st.floats(-1e6, 1e6, allow_nan=False),
    bool: st.booleans(),
    str: WORDS,
    Path: ids,
}
# Values no option of that type takes, with the words the error must contain.
WRONG = {
    int: [("abc", "valid integer"), (1.5, "fractional part"), (True, "boolean"), ("1.2.3", "valid integer")],
    float: [("ten", "valid number"), (False, "boolean"), ("1,5", "valid number")],
    bool: [("maybe", "valid boolean"), (2, "valid boolean"), (1.5, "valid boolean")],
    Path: [(5, "valid path"), (2.5, "valid path")],
    str: [],
}


def _annotation(param: Any) -> tuple[Any, bool]:
    """(element type, repeatable) of a Typer parameter."""
    annotation = param.type_descriptor.annotation
    if getattr(annotation, "__origin__", None) is list:
        return annotation.__args__[0], True
    return annotation, False


@st.composite
def config_files(draw: st.DrawFn) -> tuple[str, dict[str, Any], dict[str, Any], dict[str, str], list[str]]:
    """(command, YAML mapping, expected parameters, wrong keys → error words, unknown keys)."""
    name = draw(st.sampled_from(sorted(COMMANDS)))
    command = COMMANDS[name]
    mapping: dict[str, Any] = {}
    expected: dict[str, Any] = {}
    wrong: dict[str, str] = {}
    for param in command.params:
        if param.name in ("config", "help") or not (param.required or draw(st.booleans())):
            continue
        element, repeatable = _annotation(param)
        key = param.name if draw(st.booleans()) else param.name.replace("_", "-")
        corrupt = draw(st.integers(0, 9)) == 0 and not param.required
        if corrupt:
            kinds = [*WRONG[element], (["a", "b"] if not repeatable else [["nested"]], "value"), ({"a": 1}, "")]
            value, words = draw(st.sampled_from(kinds))
            mapping[key], wrong[param.name] = value, words
            continue
        if repeatable and draw(st.booleans()):
            values = draw(st.lists(VALID[element], min_size=1, max_size=3))
            mapping[key], expected[param.name] = values, [element(v) if element is Path else v for v in values]
        else:
            value = draw(VALID[element])
            mapping[key] = value
            converted = Path(value) if element is Path else value
            expected[param.name] = [converted] if repeatable else converted
    unknown = []
    if draw(st.integers(0, 4)) == 0:
        unknown = draw(st.lists(WORDS.map(lambda w: "zz_" + w), max_size=2, unique=True))
    for key in unknown:
        mapping[key] = draw(st.one_of(st.integers(), WORDS))
    return name, mapping, expected, wrong, unknown


def _make_context(name: str, path: Path) -> Any:
    return COMMANDS[name].make_context(name, ["--config", str(path)])


@FUZZ
@given(case=config_files(), crlf=st.booleans(), bom=st.booleans())
@example(case=("beir eval", {"data": "d", "out": "o", "k": True}, {}, {"k": "boolean"}, []), crlf=False, bom=False)
@example(case=("beir eval", {"data": "d", "out": "o", "measures": ["a", "b"]}, {}, {"measures": "one value"}, []),
         crlf=False, bom=False)
@example(case=("ab compare", {"run_a": "a", "run_b": "b", "qrels": "q", "metric": {"a": 1}}, {},
               {"metric": "strings or numbers"}, []), crlf=False, bom=False)
@example(case=("ab offpolicy", {"log": "l", "policy": "p"}, {"log": Path("l"), "policy": [Path("p")]}, {}, []),
         crlf=True, bom=True)
def test_cli_config_values_become_parameters_or_name_the_file_and_key(case, crlf: bool, bom: bool) -> None:
    """Regressions: ``k: true`` was taken as 1, ``measures: [a, b]`` as the string "['a', 'b']", a mapping in a list
    option as its repr, and ``policy: p`` (one value for a repeatable option) failed with "Value must be an
    iterable" naming neither file nor key."""
    name, mapping, expected, wrong, unknown = case
    text = yaml.safe_dump(mapping, allow_unicode=True)
    data = ("\ufeff" if bom else "").encode() + text.replace("\n", "\r\n" if crlf else "\n").encode()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_bytes(data)
        try:
            context = _make_context(name, path)
        except typer.BadParameter as err:
            message = err.format_message()
            assert unknown or wrong, f"`{name}` refused a valid config: {message}"
            assert str(path) in message, message
            if unknown:
                assert "unknown keys" in message and all(repr(k) in message for k in unknown), message
            else:
                named = [k for k in wrong if f"key `{k}`" in message]
                assert named, f"message names none of the wrong keys {sorted(wrong)}: {message}"
                assert wrong[named[0]] in message, f"expected {wrong[named[0]]!r} in {message!r}"
            return
    assert not unknown and not wrong, f"`{name}` accepted unknown keys {unknown} / wrong values {wrong}"
    for key, value in expected.items():
        got = context.params[key]
        assert got == value or (isinstance(value, float) and math.isclose(got, value)), (key, got, value)


@FUZZ
@given(content=st.one_of(st.binary(max_size=80), st.text(max_size=80).map(str.encode)))
@example(content=b"a: " + b"[" * 3000 + b"]" * 3000)  # regression: RecursionError escaped from PyYAML
@example(content=b"k: 1\nk-1: 2\nk_1: 3\n")  # regression: `k-1` and `k_1` silently collapsed into one key
@example(content=b"\xff\xfe")
def test_cli_config_bytes_parse_or_name_the_file(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_bytes(content)
        try:
            empty = not yaml.safe_load(content)  # None, {}, 0, "", [] ... all mean "no options"
        except (yaml.YAMLError, UnicodeDecodeError, RecursionError):
            empty = False
        for name in ("beir eval", "ab compare"):
            try:
                _make_context(name, path)
            except typer.BadParameter as err:
                if type(err).__name__ == "MissingParameter":  # no options given: the required ones are missing
                    assert empty, err.format_message()
                else:
                    assert_names_some_line(err.message, path)


def test_cli_reports_a_bad_config_value_with_status_2(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("data: d\nout: o\nk: [10, 20]\n")
    assert main(["beir", "eval", "--config", str(config)]) == 2
    assert f"{config}:3: key `k`: takes one value" in capsys.readouterr().err.replace("\n", " ").replace("│", " ")


# ---------------------------------------------------------------------------------------------------------------
# The `train:` section of a recsys run config
# ---------------------------------------------------------------------------------------------------------------

positive = st.floats(1e-8, 10.0)
real = st.floats(-1e6, 1e6, allow_nan=False)
# Valid values of each documented `train` option (TrainConfig docstring and __post_init__ ranges).
TRAIN_VALID: dict[str, st.SearchStrategy] = {
    "epochs": st.integers(1, 500), "max_steps": st.none() | st.integers(1, 10**6), "batch_size": st.integers(1, 8192),
    "loss": st.sampled_from(["softmax", "bpr"]), "num_negatives": st.integers(1, 64),
    "logq": st.sampled_from(["counts", "streaming", "none"]), "logq_weight": real, "streaming_alpha": real,
    "optimizer": st.sampled_from(["adam", "adagrad", "sgd"]), "lr": positive, "sparse_lr": st.none() | positive,
    "weight_decay": real, "sparse_weight_decay": real, "grad_clip": st.none() | real, "seed": st.integers(),
    "eval_every": st.integers(0, 10), "monitor": WORDS, "patience": st.none() | st.integers(1, 20),
    "checkpoint_every": st.integers(0, 10**4), "restore_best": st.booleans(),
    "show_progress": st.none() | st.booleans(),
}
INTS = ("epochs", "max_steps", "batch_size", "num_negatives", "seed", "eval_every", "patience", "checkpoint_every")
FLOATS = ("logq_weight", "streaming_alpha", "lr", "sparse_lr", "weight_decay", "sparse_weight_decay", "grad_clip")


def _wrong_values(field: str) -> list[Any]:
    """Values ``train.<field>`` must refuse: wrong types, non-finite floats, out-of-range numbers, bad choices."""
    if field in INTS:
        out = ["3", 2.5, True, [1], {"a": 1}] + ([0] if field in ("epochs", "batch_size", "max_steps", "patience",
                                                                    "num_negatives") else [])
        return out + ([-1] if field in ("eval_every", "checkpoint_every") else [])
    if field in FLOATS:
        return ["1e-3", True, [0.1], math.nan, math.inf, -math.inf] + ([0.0, -1.0] if field in ("lr", "sparse_lr")
                                                                      else [])
    if field in ("restore_best", "show_progress"):
        return [1, "yes", 0.0]
    if field == "monitor":
        return [3, ["R@20"], None]
    return ["nope", 1, None, ["softmax"]]  # the Literal choices


@st.composite
def train_sections(draw: st.DrawFn) -> tuple[Any, dict[str, Any], set[str], list[Any]]:
    """(section, expected fields, wrong fields, unknown keys)."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    section, expected, wrong = {}, {}, set()
    for field in sorted(known & set(TRAIN_VALID)):
        if not draw(st.booleans()):
            continue
        if draw(st.integers(0, 7)) == 0:
            section[field] = draw(st.sampled_from(_wrong_values(field)))
            wrong.add(field)
        else:
            section[field] = expected[field] = draw(TRAIN_VALID[field])
    unknown = []
    if draw(st.integers(0, 5)) == 0:  # YAML keys can be any scalar
        unknown = draw(st.lists(st.one_of(WORDS.map(lambda w: "zz_" + w), st.integers(), st.none(), st.booleans(),
                                          st.floats(allow_nan=False)), min_size=1, max_size=3, unique=True))
        for key in unknown:
            section[key] = 1
    if not (wrong or unknown) and draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from([None, 5, "epochs: 3", [["epochs", 3]]])), {}, {"<section>"}, []
    return section, expected, wrong, unknown


@FUZZ
@given(case=train_sections())
@example(case=({"lr": "1e-3"}, {}, {"lr"}, []))  # regression: '>' between str and int (TypeError, no field name)
@example(case=({"epochs": True}, {}, {"epochs"}, []))  # regression: True was taken as 1 epoch
@example(case=({"lr": math.nan}, {}, {"lr"}, []))
@example(case=({"weight_decay": math.inf}, {}, {"weight_decay"}, []))  # regression: accepted
@example(case=({1: 2, "zz_a": 3}, {}, set(), [1, "zz_a"]))  # regression: sorted() of int and str keys crashed
@example(case=(None, {}, {"<section>"}, []))  # regression: `train:` left empty → set(None) TypeError
def test_train_sections_build_the_config_or_name_the_field(case) -> None:
    section, expected, wrong, unknown = case
    try:
        config = recsys_config({"train": section}).train
    except ConfigError as err:
        message = str(err)
        assert wrong or unknown, f"a valid section was refused: {message}"
        if unknown:  # the first problem is reported: an unknown key, or a wrong value before it
            named = [k for k in unknown if f"unknown key `train.{k}`" in message or f"unknown key {k!r}" in message]
            assert named or any(f"`train.{field}`" in message for field in wrong), message
        elif "<section>" in wrong:
            assert "`train` must be a mapping" in message, message
        else:
            assert any(f"`train.{field}`" in message for field in wrong), f"names none of {sorted(wrong)}: {message}"
        return
    assert not wrong and not unknown, f"accepted wrong fields {sorted(wrong)} / unknown keys {unknown}"
    for field, value in expected.items():
        assert getattr(config, field) == value, field
    defaults = TrainConfig()
    for field in {f.name for f in dataclasses.fields(TrainConfig)} - set(expected):
        assert getattr(config, field) == getattr(defaults, field), field


# ---------------------------------------------------------------------------------------------------------------
# The recsys run and sparse-training config loaders (found by the same fuzzing, fixed after it).
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "1: a\nfoo: b\n",  # TypeError: sorted() of int and str section names
        "a: " + "[" * 3000 + "]" * 3000 + "\n",  # RecursionError
        "a: [\n",  # a bare PyYAML ParserError, no "path:" prefix
    ],
)
def test_recsys_run_config_errors_name_the_file(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    try:
        load_recsys_config(path)
    except ValueError as err:  # the contract: a ValueError naming the file
        assert str(path) in str(err), str(err)
        return
    pytest.fail("accepted")


@pytest.mark.parametrize(
    "text",
    [
        "data: d\nout_dir: o\nteacher_weights: 5\n",  # len() of an int
        "data: d\nout_dir: o\n1: 2\nzz: 3\n",  # sorted() of int and str keys
        "a: " + "[" * 3000 + "]" * 3000 + "\n",  # RecursionError
        "data: d\nout_dir: o\nlr: .nan\n",  # accepted: NaN learning rate
        "data: d\nout_dir: o\nseed: abc\n",  # accepted: fails much later, inside training
        "data: d\nout_dir: o\nwarmup_steps: abc\n",  # accepted
        "data: d\nout_dir: o\ntrain_encoder: 'no'\n",  # accepted: the string 'no' is truthy
    ],
)
def test_sparse_train_config_errors_name_the_key(tmp_path, text):
    path = tmp_path / "sparse.yaml"
    path.write_text(text)
    try:
        load_sparse_train_config(path)
    except ValueError as err:  # the contract: a ValueError naming the file or the key
        assert str(path) in str(err) or "`" in str(err), str(err)
        return
    pytest.fail("accepted")
