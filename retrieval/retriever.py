"""The first-stage retriever interface and its name registry.

``regkit beir eval`` and ``regkit retrieval`` dispatch through them.

A retriever is a class with two methods and one class attribute (:class:`Retriever`):

* ``index(corpus, index_dir, *, overwrite=False) -> dict``: build the index of ``{doc_id: Document}`` in the folder
  ``index_dir`` (written atomically; an existing one is replaced only with ``overwrite``) and return statistics
  about it (JSON values, recorded in ``metrics.json``);
* ``search(index_dir, queries, k) -> Run``: the top ``k`` documents of each query ``{qid: text}`` in the index at
  ``index_dir``, as ``{qid: {doc_id: score}}``; every query id comes back, one without results as ``{}``;
* ``index_folder``: the index's folder name inside a ``regkit beir eval`` output folder.

Its options (``k1``, ``model``, ...) are its constructor's keyword arguments, validated there. Adding a retriever
is one decorated class, :func:`register_retriever`; the commands list and accept it by name. The built-in ones
(``bm25``, ``dense``, ``sparse``) live in :mod:`retrieval.builtin_retrievers`.
"""

from __future__ import annotations

import importlib
import inspect
import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar, runtime_checkable

from retrieval.search import Run

if TYPE_CHECKING:
    from retrieval.beir import Document

__all__ = [
    "Retriever",
    "available_retrievers",
    "build_retriever",
    "check_run",
    "get_retriever",
    "register_retriever",
    "retriever_options",
]

T = TypeVar("T", bound=type)

_BUILTINS = "retrieval.builtin_retrievers"
_REGISTRY: dict[str, type] = {}


@runtime_checkable
class Retriever(Protocol):
    """A first-stage retriever: builds an index of a corpus in a folder, searches it (module docstring)."""

    index_folder: ClassVar[str]

    def index(self, corpus: Mapping[str, Document], index_dir: Path, *, overwrite: bool = False) -> dict[str, Any]:
        """Build the index of ``corpus`` at ``index_dir``; return statistics about it (JSON values)."""
        ...

    def search(self, index_dir: Path, queries: Mapping[str, str], k: int) -> Run:
        """Top-``k`` ``{qid: {doc_id: score}}`` for every query id of ``queries`` (``{}`` for no result)."""
        ...


def register_retriever(name: str) -> Callable[[T], T]:
    """Class decorator adding a retriever under ``name`` (``regkit beir eval --retriever NAME``).

    Raises:
        TypeError: the class lacks ``index``, ``search`` or a string ``index_folder``.
        ValueError: ``name`` is empty, has whitespace, or is taken by another class.
    """
    if not isinstance(name, str) or not name or any(ch.isspace() for ch in name):
        raise ValueError(f"retriever name must be a non-empty string without whitespace, got {name!r}.")

    def decorator(cls: T) -> T:
        missing = [attr for attr in ("index", "search") if not callable(getattr(cls, attr, None))]
        if missing or not isinstance(getattr(cls, "index_folder", None), str):
            lacks = ", ".join(f"`{attr}`" for attr in missing) or "a string `index_folder`"
            raise TypeError(f"retriever {name!r} ({cls.__qualname__}) lacks {lacks}; see retrieval.retriever.")
        existing = _REGISTRY.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(f"retriever name {name!r} is already registered by {existing.__module__}.")
        _REGISTRY[name] = cls
        return cls

    return decorator


def _registry() -> dict[str, type]:
    importlib.import_module(_BUILTINS)  # registers bm25, dense, sparse on first use
    return _REGISTRY


def available_retrievers() -> list[str]:
    """Registered retriever names, sorted."""
    return sorted(_registry())


def get_retriever(name: str) -> type:
    """The class registered as ``name``.

    Raises:
        ValueError: no retriever is registered under ``name``; the message lists the registered ones.
    """
    registry = _registry()
    if name not in registry:
        raise ValueError(f"`retriever` must be one of {sorted(registry)}, got {name!r}.")
    return registry[name]


def retriever_options(cls: type) -> list[str]:
    """The options a retriever class takes: its constructor's keyword arguments, sorted."""
    parameters = inspect.signature(cls).parameters.values()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return sorted(p.name for p in parameters if p.kind in kinds)


def build_retriever(
    name: str, options: Mapping[str, Any] | None = None, *, explicit: Iterable[str] = ()
) -> Retriever:
    """Construct retriever ``name`` with those of ``options`` that its constructor takes.

    Args:
        name: a registered retriever name.
        options: every option the caller offers (command-line flags, config fields); each retriever takes the ones
            its constructor names and the others are left out.
        explicit: the names in ``options`` the user set. One the retriever does not take is an error: it would
            be ignored silently.

    Raises:
        ValueError: unknown ``name``, an explicit option the retriever does not take, or what the retriever's
            constructor refuses.
    """
    cls = get_retriever(name)
    options = dict(options or {})
    takes = retriever_options(cls)
    ignored = sorted(set(explicit) & (set(options) - set(takes)))
    if ignored:
        takers = [other for other in available_retrievers() if ignored[0] in retriever_options(get_retriever(other))]
        hint = f"; it is an option of {takers}" if takers else ""
        raise ValueError(f"retriever {name!r} takes no option `{ignored[0]}` (its options: {takes}){hint}.")
    return cls(**{key: value for key, value in options.items() if key in takes})


def check_run(name: str, run: Mapping[str, Mapping[str, float]], queries: Mapping[str, str], k: int) -> Run:
    """``run`` with every query id of ``queries`` (``{}`` where missing), after checking it.

    ``run`` is what retriever ``name`` returned for ``queries``.

    Raises:
        ValueError: a query id that was not asked, more than ``k`` documents for a query, or a score that is not a
            finite number; the message names the retriever and the query.
    """
    unknown = sorted(set(map(str, run)) - set(map(str, queries)))
    if unknown:
        raise ValueError(f"retriever {name!r} returned query id {unknown[0]!r}, which was not searched.")
    checked: Run = {}
    for qid in queries:
        docs = run.get(qid, {})
        if len(docs) > k:
            raise ValueError(f"retriever {name!r} returned {len(docs)} documents for query {qid!r}, more than k={k}.")
        for doc_id, score in docs.items():
            if isinstance(score, bool) or not isinstance(score, numbers.Real) or not math.isfinite(score):
                raise ValueError(f"retriever {name!r}, query {qid!r}, document {doc_id!r}: score must be a finite "
                                 f"number, got {score!r}.")
        checked[str(qid)] = {str(doc_id): float(score) for doc_id, score in docs.items()}
    return checked
