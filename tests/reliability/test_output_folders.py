"""Nothing outside the output folder, nothing overwritten silently (``common_regs.output_folders``), through the CLI.

* a finished output folder is refused without ``--overwrite``, and nothing in it changes;
* a non-empty folder regkit did not write (no marker) is refused by every command that writes, even with
  ``--overwrite``, before anything is written into it;
* a demo model name that would leave the output folder (absolute, ``..``) is refused before anything is written;
* outputs are created with the modes the umask allows (atomic writes used to leave them 0600).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from common_regs.output_folders import ForeignFolderError
from pipelines.cli import main
from retrieval.runs import write_trec_run
from retrieval.sparse_index import index_with_model

REPO = Path(__file__).resolve().parents[2]
DEMO_BEIR = REPO / "data" / "demo" / "beir"
TINY_DEMO = REPO / "pipelines" / "configs" / "demo_tiny.yaml"


def _snapshot(folder: Path) -> dict[str, tuple[int, int, bytes] | None]:
    """Every path under ``folder`` (hidden ones included): files with inode, mtime and content; folders as None.

    An atomic rewrite renames a new file over the old one, so a rewritten file has another inode.
    """
    return {str(p.relative_to(folder)): (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) if p.is_file()
            else None for p in sorted(folder.rglob("*"))}


def _foreign(folder: Path) -> Path:
    (folder / "results").mkdir(parents=True)
    (folder / "notes.txt").write_text("my own notes\n")
    (folder / "results" / "table.csv").write_text("a,b\n1,2\n")
    return folder


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("regkit: error:") and "\n" not in err, err
    return err


def _ab_inputs(root: Path) -> list[str]:
    qrels = root / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n")
    write_trec_run({"q1": {"d1": 2.0, "d2": 1.0}, "q2": {"d1": 2.0, "d2": 1.0}}, root / "a.run")
    write_trec_run({"q1": {"d1": 2.0, "d2": 1.0}, "q2": {"d2": 2.0, "d1": 1.0}}, root / "b.run")
    return [str(root / "a.run"), str(root / "b.run"), "--qrels", str(qrels), "--resamples", "100"]


def _sparse_config(root: Path, out: Path) -> str:
    (root / "train.yaml").write_text(yaml.safe_dump({"data": str(DEMO_BEIR), "out_dir": str(out), "steps": 1}))
    return str(root / "train.yaml")


COMMANDS: dict[str, Callable[[Path, Path], list[str]]] = {
    "beir eval": lambda root, out: ["beir", "eval", "--data", str(DEMO_BEIR), "--out", str(out), "--k", "10"],
    "retrieval index": lambda root, out: ["retrieval", "index", "--data", str(DEMO_BEIR), "--index", str(out)],
    "retrieval train": lambda root, out: ["retrieval", "train", "--config", _sparse_config(root, out)],
    "recsys train": lambda root, out: ["recsys", "train", "--output-dir", str(out)],
    "ab compare": lambda root, out: ["ab", "compare", *_ab_inputs(root), "--out", str(out)],
    "data demo": lambda root, out: ["data", "demo", "--out", str(out)],
    "demo": lambda root, out: ["demo", "--config", str(TINY_DEMO), "--out", str(out)],
}


@pytest.mark.java
@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
def test_every_writing_command_refuses_a_folder_regkit_did_not_write(command, overwrite, tmp_path, capsys):
    inputs, work = tmp_path / "inputs", tmp_path / "work"
    inputs.mkdir()
    out = _foreign(work / "mine")
    argv = COMMANDS[command](inputs, out) + (["--overwrite"] if overwrite else [])
    before = _snapshot(work)
    capsys.readouterr()
    assert main(argv) == 2
    err = _one_line_error(capsys)
    assert str(out) in err and ("regkit did not write it" in err or ("already exists" in err and not overwrite)), err
    assert _snapshot(work) == before  # no lock, no marker, no temporary, nothing replaced


@pytest.mark.java
def test_beir_eval_refuses_a_finished_folder_and_overwrite_rewrites_it(tmp_path, capsys):
    out = tmp_path / "bm25"
    argv = ["beir", "eval", "--data", str(DEMO_BEIR), "--out", str(out), "--k", "10"]
    assert main(argv) == 0
    assert (out / "_SUCCESS.json").is_file() and (out / "index" / "regkit-index.json").is_file()
    finished = _snapshot(out)
    capsys.readouterr()
    assert main(argv) == 2  # used to replace index/ and metrics.json silently
    err = _one_line_error(capsys)
    assert str(out) in err and "finished run" in err and "--overwrite" in err
    assert "another output folder" in err and "--output-dir" not in err  # beir eval's flag is --out
    assert _snapshot(out) == finished

    (out / "notes.txt").write_text("kept")  # --overwrite rewrites regkit's outputs and deletes nothing else
    assert main([*argv, "--overwrite"]) == 0
    rewritten = _snapshot(out)
    assert rewritten["notes.txt"][2] == b"kept"
    for name in ("metrics.json", "run.trec", "index/regkit-index.json", "_SUCCESS.json"):
        assert rewritten[name][0] != finished[name][0], name
    assert json.loads((out / "metrics.json").read_text())["retriever"] == "bm25"


@pytest.mark.java
def test_retrieval_index_overwrite_replaces_a_regkit_index_only(tmp_path, capsys):
    index = tmp_path / "index"
    argv = ["retrieval", "index", "--data", str(DEMO_BEIR), "--index", str(index), "--overwrite"]
    assert main(argv) == 0  # a regkit index: replaced
    built = (index / "_SUCCESS.json").stat().st_ino
    assert main(argv) == 0 and (index / "_SUCCESS.json").stat().st_ino != built

    lucene = _foreign(tmp_path / "someone-elses-index")  # e.g. a Lucene index built by another tool
    (lucene / "segments_1").write_bytes(b"\x3f\xd7\x6c\x17")
    before = _snapshot(tmp_path)
    capsys.readouterr()
    assert main(["retrieval", "index", "--data", str(DEMO_BEIR), "--index", str(lucene), "--overwrite"]) == 2
    err = _one_line_error(capsys)
    assert str(lucene) in err and "regkit-index.json" in err and "--overwrite" in err
    assert _snapshot(tmp_path) == before


def test_impact_index_refuses_a_foreign_folder_before_encoding(tmp_path):
    folder = _foreign(tmp_path / "index")
    work = tmp_path / ".index.encoding"
    with pytest.raises(ForeignFolderError, match="regkit did not write it"):
        # the model is never touched: the folder is checked before the (long) encoding starts
        index_with_model(None, {"d1": "text"}, folder, overwrite=True, work_dir=work)
    assert not work.exists() and sorted(p.name for p in folder.iterdir()) == ["notes.txt", "results"]


@pytest.mark.parametrize("name", ["{victim}", "../victim", "a/../../victim", ".."])
def test_demo_model_name_that_leaves_the_output_folder_is_refused_before_anything_is_written(name, tmp_path, capsys):
    victim = tmp_path / "victim"
    for sub in ("checkpoints", "model"):
        (victim / sub).mkdir(parents=True)
        (victim / sub / "keep.txt").write_text("not the demo's")
    out = tmp_path / "demo" / "recsys-out"
    model = {"ids_only": True, "model": {"name": "mf", "embedding_dim": 8},
             "train": {"loss": "bpr", "epochs": 1, "batch_size": 128}}
    models = json.dumps({name.format(victim=victim): model})
    before = _snapshot(tmp_path)
    capsys.readouterr()
    status = main(["demo", "--config", str(TINY_DEMO), "--out", str(out), "--set", f"recsys.models={models}",
                   "--set", "recsys.ab=[]"])
    assert status == 2
    err = _one_line_error(capsys)
    assert "`recsys.models` key" in err and "not a valid name" in err
    assert _snapshot(tmp_path) == before and not out.exists()


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_outputs_get_the_modes_the_umask_allows(umask_022, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    out = tmp_path / "ab"
    assert main(["ab", "compare", *_ab_inputs(inputs), "--out", str(out)]) == 0
    modes = {str(p.relative_to(out)): p.stat().st_mode & 0o777 for p in [out, *out.rglob("*")]}
    assert {"metrics.json", "report.html"} <= set(modes)
    wrong = {name: oct(mode) for name, mode in modes.items() if mode != (0o755 if (out / name).is_dir() else 0o644)}
    assert not wrong, wrong  # atomic writes used to leave metrics.json, _SUCCESS.json, ... at 0600
