"""Atomic output: a failure inside the block leaves the previous content untouched and no temporary behind."""

from __future__ import annotations

import pytest

from common_regs.io import atomic_dir, atomic_path, atomic_write_text
from common_regs.output_folders import ForeignFolderError


def test_atomic_path_keeps_old_content_on_failure(tmp_path):
    target = atomic_write_text(tmp_path / "f.txt", "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half-writ")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]
    atomic_write_text(target, "new")
    assert target.read_text() == "new"


def test_atomic_dir_appears_complete_or_not_at_all(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "part1").write_text("x")
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(FileExistsError, match="already exists"), atomic_dir(target):
        pass
    with pytest.raises(RuntimeError), atomic_dir(target, overwrite=True, markers=("a",)) as tmp:
        (tmp / "b").write_text("2")
        raise RuntimeError("crash")
    assert [p.name for p in target.iterdir()] == ["a"]  # the old folder survives a failed overwrite
    with atomic_dir(target, overwrite=True, markers=("a",)) as tmp:
        (tmp / "b").write_text("2")
    assert [p.name for p in target.iterdir()] == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert oct(target.stat().st_mode & 0o777) != oct(0o700)


def test_atomic_dir_never_replaces_a_folder_without_its_markers(tmp_path):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("not regkit's")
    with pytest.raises(ForeignFolderError, match="regkit did not write it"), atomic_dir(
        target, overwrite=True, markers=("regkit-index.json",)
    ):
        pass
    assert [p.name for p in target.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # refused before any temporary was made
