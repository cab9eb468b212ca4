"""Helpers shared by the ``test_fuzz_*`` property tests: hypothesis settings and the error-message contract.

The contract every loader meets: a malformed input raises the loader's documented error type, and its message
names the file and where in it the problem is (``path:line``, a column, a key). Hypothesis re-runs a test body many
times with one function-scoped fixture, so each example writes into its own ``tempfile.TemporaryDirectory``.
"""

from __future__ import annotations

import re
import string
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# Bounded so the whole tests/reliability/test_fuzz_* set stays well under a minute on one core; deadline=None
# because every example does file IO, whose timing is noisy on a shared machine.
FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=True,
)

# Identifiers that every format can carry verbatim (no whitespace, tabs, quotes or newlines).
ID_ALPHABET = string.ascii_letters + string.digits + "-_.:"
ids = st.text(ID_ALPHABET, min_size=1, max_size=8)


def assert_names_location(message: str, path: Path | str, line: int | None = None) -> None:
    """``message`` names ``path`` (and ``path:line`` when ``line`` is given)."""
    assert str(path) in message, f"error message does not name the file {path}: {message!r}"
    if line is not None:
        assert f"{path}:{line}:" in message, f"error message does not name line {line} of {path}: {message!r}"


def assert_names_some_line(message: str, path: Path | str) -> None:
    """``message`` is ``path: ...`` or ``path:<line>: ...`` (a file-level or a line-level problem)."""
    assert re.match(re.escape(str(path)) + r"(:\d+)?: ", message), f"message does not start with the file: {message!r}"
