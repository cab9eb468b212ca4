"""The split a recsys run trains on, as files another library can use, and the fingerprint that ties them to a run.

``regkit data split`` writes the split of a run config without training (:func:`write_split`); ``regkit recsys
train`` records the same :meth:`SplitLogs.fingerprint` in ``metrics.json`` and writes its test recommendations as a
TREC run beside TREC qrels of the test split (:func:`write_test_trec`). Both get the logs from one code path
(:func:`pipelines.recsys_run.load_split`, the data preparation of ``train_run``), so equal fingerprints mean equal
files.

Files of a split folder:

* ``train.parquet``: the training split (what the served model is trained on; its items are excluded from the test
  lists) and ``test.parquet``: the test split;
* ``fit.parquet`` / ``valid.parquet``: the validation carve of ``train.parquet``. Early stopping trains on ``fit``
  and watches ``valid``; with ``eval.refit`` the served model is then retrained on all of ``train`` for the best
  number of epochs. A given validation file writes ``valid.parquet`` only (early stopping trains on ``train``), and
  ``data.validation.method: none`` writes neither;
* ``test_qrels.trec``: the test split as TREC qrels, ``u:<user_id> 0 i:<item_id> 1``. The ``u:`` / ``i:``
  prefixes are those of the recsys evaluation (:mod:`pipelines.evaluation.recsys`): the BEIR rule that drops a
  document whose id equals the query id would otherwise delete item 7 from user 7's list. A run to compare with
  ``regkit ab compare`` uses the same ids, one line per recommended item;
* ``split.json``: the split's name, row counts, fingerprint and the ``data`` section it was made from.

The fingerprint is the SHA-256 of each side's content (column names, dtypes and values in row order; not the parquet
bytes, which depend on the writer) and one SHA-256 over the sides: a parquet file read back gives the digest of the
frame it was written from.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from common_regs.io import atomic_dir
from pipelines.evaluation.qrels import write_trec_qrels
from pipelines.evaluation.recsys import qrels_from_log, rank_users
from recsys.serving import Recommender
from retrieval.runs import write_trec_run

logger = logging.getLogger(__name__)

__all__ = ["SplitLogs", "frame_sha256", "write_split", "write_test_trec"]

TEST_RUN, TEST_QRELS = "test_run.trec", "test_qrels.trec"
_CHUNK_ROWS = 100_000


def frame_sha256(frame: pl.DataFrame) -> str:
    """SHA-256 of a frame's column names, dtypes and values in row order (equal for a frame and its parquet copy).

    Values are hashed as CSV with strings quoted, so a null and an empty string differ and floats keep every digit.
    """
    digest = hashlib.sha256(json.dumps([[name, str(dtype)] for name, dtype in frame.schema.items()]).encode())
    for chunk in frame.iter_slices(_CHUNK_ROWS):
        digest.update(chunk.write_csv(include_header=False, quote_style="non_numeric").encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class SplitLogs:
    """The cleaned logs of a run: ``train`` / ``test``, and the validation carve ``fit`` / ``valid`` when there is one.

    ``name`` and ``validation`` say how they were made (as recorded in ``metrics.json``).
    """

    name: str
    train: pl.DataFrame
    test: pl.DataFrame
    fit: pl.DataFrame | None = None
    valid: pl.DataFrame | None = None
    validation: str | None = None

    def sides(self) -> dict[str, pl.DataFrame]:
        """The non-empty sides by file stem, in a fixed order."""
        named = {"train": self.train, "test": self.test, "fit": self.fit, "valid": self.valid}
        return {side: frame for side, frame in named.items() if frame is not None}

    def fingerprint(self) -> dict[str, str]:
        """``{"sha256": <over the sides>, "train": ..., "test": ..., ["fit": ..., "valid": ...]}``."""
        digests = {side: frame_sha256(frame) for side, frame in self.sides().items()}
        overall = hashlib.sha256("".join(f"{side}={digest}\n" for side, digest in digests.items()).encode())
        return {"sha256": overall.hexdigest(), **digests}


def write_split(
    logs: SplitLogs, out: str | os.PathLike[str], *, data: Mapping[str, Any], overwrite: bool = False
) -> dict[str, Any]:
    """Write the split folder (module docstring) atomically; returns what ``split.json`` holds.

    Raises:
        FileExistsError: ``out`` exists and ``overwrite`` is false.
    """
    summary = {
        "split": logs.name,
        "validation": logs.validation,
        "rows": {side: frame.height for side, frame in logs.sides().items()},
        "fingerprint": logs.fingerprint(),
        "data": dict(data),
    }
    with atomic_dir(out, overwrite=overwrite, markers=("split.json",)) as tmp:
        for side, frame in logs.sides().items():
            frame.write_parquet(tmp / f"{side}.parquet")
        write_trec_qrels(qrels_from_log(logs.test), tmp / TEST_QRELS)
        (tmp / "split.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    return summary


def write_test_trec(
    service: Recommender, test: pl.DataFrame, out: str | os.PathLike[str], *, k: int, tag: str
) -> bool:
    """Write the served model's top-``k`` lists of the test users (``test_run.trec``) and ``test_qrels.trec``.

    The lists are the ones the test metrics are computed on (:func:`pipelines.evaluation.recsys.rank_users`), so
    ``regkit ab compare`` on these files reproduces them. Ids that a TREC file cannot hold (whitespace in a string
    id) write neither file, with a warning; returns whether they were written.
    """
    raw_users = test["user_id"].unique(maintain_order=True).to_numpy()
    _, run = rank_users(service, raw_users, k)
    try:
        write_trec_qrels(qrels_from_log(test), Path(out) / TEST_QRELS)
        write_trec_run(run, Path(out) / TEST_RUN, tag=tag)
    except ValueError as err:
        (Path(out) / TEST_QRELS).unlink(missing_ok=True)
        logger.warning("%s and %s not written: %s", TEST_RUN, TEST_QRELS, err)
        return False
    return True
