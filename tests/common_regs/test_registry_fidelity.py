"""Every seed paper is registered, each method says how faithful it is, and names a test that exists.

Read through ``regkit regs list --format json`` (the real CLI), so what a user sees is what is checked.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from common_regs import registry
from pipelines.cli import main

REPO = Path(__file__).resolve().parents[2]
SEED_LIST = Path(os.environ.get("REGKIT_SEED_LIST", REPO.parent / "shared" / "seeds" / "papers.txt"))
OWN_PACKAGES = ("common_regs", "recsys", "retrieval", "pipelines")


def _seed_count() -> int:
    """Seed papers in ``papers.txt`` (a title line, then its abstract: one long line each), else in the README."""
    if SEED_LIST.is_file():
        return sum(len(line) > 250 for line in SEED_LIST.read_text(encoding="utf-8").splitlines())
    section = (REPO / "README.md").read_text(encoding="utf-8").split("## Methods (the ", 1)[1]
    return len(re.findall(r"^\| (\d+) \|", section.split("\n## ", 1)[0], flags=re.MULTILINE))


def _listed(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict]:
    assert main(["regs", "list", "--format", "json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def _own(records: list[dict]) -> list[dict]:
    """The repository's registrations (not fixtures that other tests register)."""
    return [r for r in records if r["module"].split(".")[0] in OWN_PACKAGES]


def _seeds(record: dict) -> list[int]:
    seed = record["seed"]
    return [] if seed is None else [seed] if isinstance(seed, int) else seed


def test_json_lists_every_seed_paper_number(capsys):
    count = _seed_count()
    assert count == 71  # the seed list this project implements; a changed file should fail loudly here
    records = _own(_listed(capsys))
    assert {key for record in records for key in record} >= {"name", "seed", "paper", "kind", "fidelity",
                                                              "verified_by"}
    covered = {number for record in records for number in _seeds(record)}
    assert covered == set(range(1, count + 1)), f"missing seeds {sorted(set(range(1, count + 1)) - covered)}"
    ssl = {record["name"]: record["seed"] for record in records if record["name"].startswith("ssl_")}
    assert ssl == {"ssl_cfm": 23, "ssl_rfm": 23, "ssl_infonce": 23}


def test_every_method_has_a_valid_fidelity_and_an_existing_verifying_test(capsys):
    records = _own(_listed(capsys))
    assert len(records) == len([m for m in registry.list_methods() if m.module.split(".")[0] in OWN_PACKAGES])
    for record in records:
        assert record["fidelity"] in registry.FIDELITIES, record["name"]
        assert record["verified_by"], f"{record['name']}: no `verified_by` test"
        path, _, test_name = record["verified_by"].partition("::")
        source = REPO / path
        assert source.is_file(), f"{record['name']}: {path} does not exist"
        if test_name:
            assert re.search(rf"^def {test_name}\(", source.read_text(encoding="utf-8"), re.MULTILINE), (
                f"{record['name']}: no test {test_name} in {path}")


def test_text_listing_shows_fidelity_counts_and_kind_filter_applies_to_json(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["regs", "list"]) == 0
    out = capsys.readouterr().out
    counts = {f: sum(m.fidelity == f for m in registry.list_methods()) for f in registry.FIDELITIES}
    assert all(f"{n} {f}" in out.splitlines()[0] for f, n in counts.items() if n)
    assert re.search(r"^dsl  mask_scheduler  seed #49  official-code$", out, flags=re.MULTILINE)
    assert {record["kind"] for record in _listed(capsys, "--kind", "reparam")} == {"reparam"}


def test_register_requires_a_known_fidelity_and_well_formed_seed_and_test(capsys, monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # leave the real registry untouched
    with pytest.raises(TypeError, match="fidelity"):
        registry.register("_x", kind="loss", paper="x")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="`fidelity` must be one of"):
        registry.register("_x", kind="loss", paper="x", fidelity="faithful")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`verified_by` must be"):
        registry.register("_x", kind="loss", paper="x", fidelity="diagnostic", verified_by="test_x.py")
    with pytest.raises(ValueError, match="`seed` must be"):
        registry.register("_x", kind="loss", paper="x", fidelity="diagnostic", seed=[3, 0])
    registry.register("_two_seeds", kind="loss", paper="x", fidelity="paper-equation", seed=[3, 5])(lambda: None)
    (record,) = [r for r in _listed(capsys) if r["name"] == "_two_seeds"]
    assert record["seed"] == [3, 5] and record["verified_by"] is None
