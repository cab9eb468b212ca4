"""Fixtures for recsys tests (the planted-structure log lives in ``planted_log.py``)."""

from __future__ import annotations

import warnings

import pytest
import torch
from planted_log import PlantedLog, make_planted_log

warnings.filterwarnings("ignore", message=".*[Ss]parse.*")


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)  # the shared CI box has 2 cores; oversubscription makes tiny models crawl


@pytest.fixture(scope="session")
def planted(tmp_path_factory: pytest.TempPathFactory) -> PlantedLog:
    return make_planted_log(tmp_path_factory.mktemp("planted"))
