"""Shared fixtures. ``shared_data`` points at ../shared/data (real public datasets, never copied here).

When that folder is absent, tests needing it skip with the reason; CI sets REGKIT_REQUIRE_SHARED_DATA=1,
which turns the skip into a failure so a missing dataset can't pass silently.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("REGKIT_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def _require(path: Path) -> Path:
    if path.exists():
        return path
    message = f"needs {path} (public dataset under ../shared/data; set REGKIT_SHARED_DATA to relocate)"
    if os.environ.get("REGKIT_REQUIRE_SHARED_DATA") == "1":
        pytest.fail(message + " and REGKIT_REQUIRE_SHARED_DATA=1")
    pytest.skip(message)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _require(SHARED_DATA)


@pytest.fixture(scope="session")
def ml100k_raw(shared_data: Path) -> Path:
    return _require(shared_data / "ml-100k")


@pytest.fixture(scope="session")
def lastfm_raw(shared_data: Path) -> Path:
    return _require(shared_data / "lastfm")


@pytest.fixture(scope="session")
def scifact_dir(shared_data: Path) -> Path:
    return _require(shared_data / "beir" / "scifact")


@pytest.fixture(scope="session")
def demo_data() -> Path:
    return REPO_ROOT / "data" / "demo"
