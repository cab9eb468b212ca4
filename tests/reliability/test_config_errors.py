"""Configs: nothing ignored, nothing ambiguous, through the real CLI (``regkit recsys train`` / ``retrieval train`` /
``demo`` and a ``--config`` of option values).

* an unknown key in any section is refused with a did-you-mean (``data.test_fration: 0.5`` used to train with the
  default 0.2: unknown keys under ``data:`` and ``eval:`` were ignored);
* a key given twice is refused naming both lines (PyYAML silently keeps the last);
* a YAML alias bomb is refused quickly in little memory, naming its line (a nine-level bomb under ``eval:`` took
  2.9 GB and ended with an empty ``regkit: error: ``);
* every wrong type names the key (``seed=abc``, ``model=abc``, ``model.embedding_dim=abc``, ``eval.ks=abc``,
  ``index.bogus``, ``num_threads=-1`` raised raw Python errors); ``lr: 1.0e+300`` is refused before it overflows
  inside the optimizer; ``lr: 1.0e300`` (a string in YAML 1.1) gets the spelling YAML reads as a number;
  ``data.validation.fraction: 1.0`` is reported as itself, not as the split's ``test_fraction``;
* no error message is empty, and each is one line;
* ``resolved_config.yaml`` of ``recsys train`` is the configuration that ran: the ``--output-dir``, every ``--set``
  and every default, and reading it back gives the same config.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import planted_log
import pytest
import yaml

from pipelines.cli import main
from pipelines.run_config import load_recsys_config

REPO = Path(__file__).resolve().parents[2]
DEMO_BEIR = REPO / "data" / "demo" / "beir"


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run ``regkit argv``; it must fail with status 2 and one non-empty line."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("regkit: error: ") and "\n" not in err, err
    assert err.removeprefix("regkit: error: ").strip(), "empty error message"
    return err.removeprefix("regkit: error: ")


def _recsys(tmp_path: Path, text: str, *sets: str) -> list[str]:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return ["recsys", "train", "--config", str(path), "--output-dir", str(tmp_path / "never"),
            *(arg for value in sets for arg in ("--set", value))]


BASE = """\
seed: 0
data:
  dir: /nowhere
  train: train.parquet
  test: test.parquet
model: {name: mf, embedding_dim: 8}
train: {epochs: 1}
"""


@pytest.mark.parametrize(
    ("section", "line", "misspelt", "meant"),
    [
        ("data", "  test_fration: 0.5", "data.test_fration", "test_fraction"),
        ("eval", "  kss: [5]", "eval.kss", "ks"),
        ("model", "  embeding_dim: 16", "model.embeding_dim", "embedding_dim"),
        ("train", "  epocs: 3", "train.epocs", "epochs"),
        ("index", "  nprob: 4", "index.nprob", "nprobe"),
        ("data.validation", "    fration: 0.2", "data.validation.fration", "fraction"),
    ],
)
def test_an_unknown_key_in_any_section_is_refused_with_a_did_you_mean(tmp_path, capsys, section, line, misspelt,
                                                                      meant):
    parent, _, child = section.partition(".")
    text = f"{parent}:\n" + (f"  {child}:\n" if child else "") + line + "\n"
    path = tmp_path / "run.yaml"
    path.write_text(text)
    message = _error(capsys, ["recsys", "train", "--config", str(path), "--output-dir", str(tmp_path / "run")])
    bad_line = text.count("\n")
    assert message.startswith(f"{path}:{bad_line}: unknown key `{misspelt}` (did you mean `{meant}`?)"), message
    assert not (tmp_path / "run").exists()


def test_unknown_keys_of_the_demo_and_of_retrieval_training_are_refused_too(tmp_path, capsys):
    message = _error(capsys, ["demo", "--out", str(tmp_path / "demo"), "--set", "retrieval.sparse.stepz=3"])
    assert message.startswith("--set retrieval.sparse.stepz=3: unknown key `retrieval.sparse.stepz` "
                              "(did you mean `steps`?)"), message
    config = tmp_path / "sparse.yaml"
    config.write_text(f"data: {DEMO_BEIR}\nout_dir: {tmp_path / 'out'}\nmodel:\n  head_bais: -4.0\n")
    message = _error(capsys, ["retrieval", "train", "--config", str(config)])
    assert message.startswith(f"{config}:4: unknown key `model.head_bais` (did you mean `head_bias`?)"), message
    assert not (tmp_path / "demo").exists() and not (tmp_path / "out").exists()


def test_a_key_given_twice_names_both_lines(tmp_path, capsys):
    message = _error(capsys, _recsys(tmp_path, BASE + "train:\n  lr: 0.01\n"))
    assert message == f"{tmp_path / 'run.yaml'}:8: key `train` is given twice (first on line 7); keep one of them."
    nested = tmp_path / "demo.yaml"
    nested.write_text("recsys:\n  top_k: 5\n  ks: [5]\n  top_k: 10\n")
    message = _error(capsys, ["demo", "--config", str(nested), "--out", str(tmp_path / "demo")])
    assert message.startswith(f"{nested}:4: key `top_k` is given twice (first on line 2)"), message
    options = tmp_path / "options.yaml"
    options.write_text("k: 10\nk: 20\n")  # a --config of option values, read by the same loader
    assert main(["beir", "eval", "--config", str(options)]) == 2
    assert f"{options}:2: key `k` is given twice (first on line 1)" in capsys.readouterr().err.replace("\n", " ")


def _bomb(levels: int) -> str:
    lines = ["eval:", '  l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_quickly_in_little_memory(tmp_path, capsys):
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb(7))  # 9**7 = 4.8 million values once expanded
    tracemalloc.start()
    started = time.perf_counter()
    try:
        message = _error(capsys, ["recsys", "train", "--config", str(path), "--output-dir", str(tmp_path / "r")])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 5.0
    assert peak < 20 * 2**20, f"{peak / 2**20:.0f} MiB"
    expected = f"{path}:7: this value expands to more than 100,000 values through YAML aliases"
    assert message.startswith(expected), message


def test_a_billion_laughs_is_refused_under_a_memory_limit(tmp_path):
    """The nine-level bomb itself, read by the one YAML loader in a process limited to 1 GiB of address space."""
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb(9))
    code = textwrap.dedent(f"""
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (2**30, 2**30))
        from pipelines.config_files import ConfigError, load_yaml
        try:
            load_yaml({str(path)!r})
        except ConfigError as err:
            print(err)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(f"{path}:"), done.stdout
    assert "expands to more than 100,000 values through YAML aliases" in done.stdout


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("seed=abc", "--set seed=abc: `seed` must be an integer, got 'abc'."),
        ("model=abc", "--set model=abc: `model` must be a mapping, got 'abc'."),
        ("model.embedding_dim=abc", "--set model.embedding_dim=abc: `model.embedding_dim` must be an integer, "
                                    "got 'abc'."),
        ("eval.ks=abc", "--set eval.ks=abc: `eval.ks` must be a list, got 'abc'."),
        ("index.bogus=1", "--set index.bogus=1: unknown key `index.bogus` in `index`, which takes: kind, nlist, "),
        ("num_threads=-1", "--set num_threads=-1: `num_threads` must be greater than 0, got -1."),
        ("train.lr=1.0e+300", "--set train.lr=1.0e+300: `train.lr` must be within ±3.4e+38 (it scales float32 "
                              "tensors), got 1e+300."),
        ("train.lr=1.0e300", "--set train.lr=1.0e300: `train.lr` must be a number, got '1.0e300' (YAML 1.1 reads "
                             "1.0e300 as a string: a float needs a dot and a signed exponent; write 1.0e+300)."),
        ("train.lr=1e-3", "--set train.lr=1e-3: `train.lr` must be a number, got '1e-3' (YAML 1.1 reads 1e-3 as a "
                          "string: a float needs a dot and a signed exponent; write 0.001)."),
        ("train.epochs=yes", "--set train.epochs=yes: `train.epochs` must be an integer, got True (YAML reads "
                             "yes / no / true / false as booleans)."),
        ("model.name=mff", "--set model.name=mff: `model.name` must be one of ['als', 'ease', 'item_knn', 'lightgcn', "
                           "'mf', 'most_popular', 'two_tower'], got 'mff' (did you mean `mf`?)."),
    ],
)
def test_each_wrong_value_names_its_key(tmp_path, capsys, override, expected):
    message = _error(capsys, _recsys(tmp_path, BASE, override))
    assert message.startswith(expected), message
    assert not (tmp_path / "never").exists()


def test_a_validation_fraction_is_reported_as_itself_with_its_line(tmp_path, capsys):
    text = "data:\n  train: train.parquet\n  test: test.parquet\n  validation:\n    method: random_holdout\n" \
           "    fraction: 1.0\n"
    message = _error(capsys, _recsys(tmp_path, text))  # was "`test_fraction` must be in (0, 1)", from the split
    assert message == f"{tmp_path / 'run.yaml'}:6: `data.validation.fraction` must be less than 1, got 1.0.", message


def test_a_range_error_of_a_domain_section_names_the_key_and_its_line(tmp_path, capsys):
    message = _error(capsys, _recsys(tmp_path, BASE.replace("train: {epochs: 1}", "train:\n  epochs: 0")))
    assert message == f"{tmp_path / 'run.yaml'}:8: `train.epochs` must be >= 1, got 0.", message


def test_resolved_config_is_the_configuration_that_ran(tmp_path, capsys):
    planted = planted_log.make_planted_log(tmp_path / "data")
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "output_dir": str(tmp_path / "not-this-one"),
        "num_threads": 1,
        "data": {"dir": str(planted.folder), "train": "train.parquet", "test": "test.parquet",
                 "validation": {"method": "none"}},
        "model": {"name": "mf", "embedding_dim": 8},
        "train": {"epochs": 1, "batch_size": 64, "show_progress": False},
    }))
    run = tmp_path / "run"
    argv = ["recsys", "train", "--config", str(config), "--output-dir", str(run), "--seed", "3",
            "--set", "train.lr=0.02", "--set", "eval.ks=[5]"]
    assert main(argv) == 0, capsys.readouterr().err
    resolved = yaml.safe_load((run / "resolved_config.yaml").read_text())
    assert resolved["output_dir"] == str(run)  # was the file's output_dir, not the folder the run wrote
    assert resolved["seed"] == 3 and resolved["train"]["lr"] == 0.02 and resolved["eval"]["ks"] == [5]
    assert resolved["train"]["epochs"] == 1 and resolved["index"]["kind"] == "flat"  # every default is written out
    assert resolved["data"]["split"] == "given" and resolved["data"]["validation"]["method"] == "none"
    again = load_recsys_config(run / "resolved_config.yaml")  # a valid config that reproduces the run
    assert again.to_dict() == resolved
