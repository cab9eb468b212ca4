"""The one YAML reader of regkit configs, and the raw-config steps before validation: merging and ``--set``.

:func:`load_yaml` reads a file with PyYAML's safe loader (plain data only, never objects) and adds three checks the
safe loader lacks:

* a key given twice in one mapping is an error naming both lines (PyYAML silently keeps the last one; keys that
  come from a ``<<: *base`` merge may be overridden, that is what merging is for);
* aliases (``*name``) may not expand the document past :data:`MAX_VALUES` values: a "billion laughs" file of a few
  hundred bytes is refused, naming its line, before anything is expanded (the expansion of a nine-level alias bomb
  took 2.9 GB); a recursive alias is refused too;
* the result is a tree of fresh objects (an alias becomes a copy, so a ``--set`` on one place never changes
  another) together with :class:`Sources`, the ``file:line`` of every key and list item.

A config's raw value then goes through :func:`deep_merge` (a base file under a user file) and
:func:`apply_overrides` (``--set a.b=value``, the value read by the same loader), each keeping :class:`Sources`
up to date, so that every validation error can name the file and line (or the ``--set``) it came from.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = [
    "MAX_VALUES",
    "ConfigError",
    "Sources",
    "apply_overrides",
    "deep_merge",
    "load_yaml",
    "parse_value",
    "read_config_files",
]

MAX_VALUES = 100_000
"""Most values (scalars, lists, mappings) a config may hold once its aliases are expanded; regkit's largest
bundled config holds about 200."""

_MAP, _SEQ, _MERGE = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:merge"

Path_ = tuple[Any, ...]


class ConfigError(ValueError):
    """A config that cannot be used as written.

    The message is one line naming the file and line (or the ``--set``) and the key.
    """


@dataclass
class Sources:
    """Where each key of a raw config was written: ``file:line`` for a YAML file, ``--set a.b=v`` for an override.

    Keys are paths into the raw config (``("data", "validation", "fraction")``; list items by index).
    """

    origin: dict[Path_, str] = field(default_factory=dict)
    default: str | None = None  # the file itself, for problems no key locates (a missing required key)

    def where(self, path: Sequence[Any]) -> str | None:
        """The source of ``path`` or of its nearest recorded parent; ``default`` when none is recorded."""
        path = tuple(path)
        for end in range(len(path), 0, -1):
            if path[:end] in self.origin:
                return self.origin[path[:end]]
        return self.default

    def replace(self, prefix: Path_, other: Sources | str) -> None:
        """Drop the sources under ``prefix`` and record ``other``.

        ``other`` is a source for everything under ``prefix``, or the sources of a value now placed at ``prefix``.
        """
        self.origin = {path: where for path, where in self.origin.items() if path[: len(prefix)] != prefix}
        if isinstance(other, str):
            self.origin[prefix] = other
        else:
            self.origin.update({prefix + path: where for path, where in other.origin.items()})

    def under(self, prefix: Path_) -> Sources:
        """The sources of the value at ``prefix``, with paths relative to it."""
        cut = len(prefix)
        return Sources({path[cut:]: where for path, where in self.origin.items() if path[:cut] == prefix and
                        len(path) > cut}, default=self.where(prefix))


def _fail(where: str, message: str) -> ConfigError:
    return ConfigError(f"{where}: {message}")


class _Reader:
    """Builds plain Python data from a composed YAML node graph, checking keys and alias expansion first."""

    def __init__(self, loader: yaml.SafeLoader, name: str) -> None:
        self.loader, self.name = loader, name
        self.sizes: dict[int, int] = {}
        self.flattened: set[int] = set()

    def at(self, node: Node) -> str:
        return f"{self.name}:{node.start_mark.line + 1}"

    def size(self, node: Node, open_nodes: set[int]) -> int:
        """Values in ``node`` with its aliases expanded (memoised per node, so a bomb costs its size in nodes)."""
        known = self.sizes.get(id(node))
        if known is not None:
            return known
        if id(node) in open_nodes:
            raise _fail(self.at(node), "a YAML alias refers to a value that contains it (a recursive alias).")
        open_nodes.add(id(node))
        children: list[Node] = []
        if isinstance(node, SequenceNode):
            children = list(node.value)
        elif isinstance(node, MappingNode):
            children = [part for pair in node.value for part in pair]
        total = 1 + sum(self.size(child, open_nodes) for child in children)
        open_nodes.discard(id(node))
        if total > MAX_VALUES:
            raise _fail(self.at(node), f"this value expands to more than {MAX_VALUES:,} values through YAML aliases "
                                       "(*name); write the values out instead of aliasing them.")
        self.sizes[id(node)] = total
        return total

    def key(self, node: Node) -> Any:
        if not isinstance(node, ScalarNode):
            raise _fail(self.at(node), "a key must be a plain value (a name or a number), not a list or mapping.")
        return self.loader.construct_object(node, deep=True)

    def check_keys(self, node: MappingNode) -> None:
        """Refuse a key written twice in ``node`` (keys merged in with ``<<`` may be overridden)."""
        seen: dict[Any, Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE:
                continue
            key = self.key(key_node)
            first = seen.setdefault(key, key_node)
            if first is not key_node:
                raise _fail(self.at(key_node), f"key `{key}` is given twice (first on line "
                                               f"{first.start_mark.line + 1}); keep one of them.")

    def build(self, node: Node, path: Path_, lines: dict[Path_, str]) -> Any:
        """``node`` as fresh Python data; records the ``file:line`` of every key and list item under ``path``."""
        if isinstance(node, MappingNode) and node.tag == _MAP:
            if id(node) not in self.flattened:  # an aliased mapping is read once per use but checked once
                self.check_keys(node)
                self.loader.flatten_mapping(node)  # resolves `<<` merges in place
                self.flattened.add(id(node))
            result = {}
            for key_node, value_node in node.value:  # merged keys first, so the mapping's own keys win
                key = self.key(key_node)
                lines[(*path, key)] = self.at(key_node)
                result[key] = self.build(value_node, (*path, key), lines)
            return result
        if isinstance(node, SequenceNode) and node.tag == _SEQ:
            items = []
            for index, item in enumerate(node.value):
                lines[(*path, index)] = self.at(item)
                items.append(self.build(item, (*path, index), lines))
            return items
        return copy.deepcopy(self.loader.construct_object(node, deep=True))  # scalars and explicitly tagged values


def _read(text: str, name: str) -> tuple[Any, dict[Path_, str]]:
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # its reader refuses control characters here
        node = loader.get_single_node()
        if node is None:
            return None, {}
        reader = _Reader(loader, name)
        reader.size(node, set())
        lines: dict[Path_, str] = {}
        return reader.build(node, (), lines), lines
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{name}:{mark.line + 1}" if mark is not None else name
        raise _fail(where, f"not valid YAML ({err.problem or err.context}).") from None
    except yaml.YAMLError as err:
        raise _fail(name, f"not valid YAML ({err}).") from None
    except RecursionError:  # PyYAML's composer recurses once per nesting level
        raise _fail(name, "not valid YAML (nested too deeply).") from None
    finally:
        if loader is not None:
            loader.dispose()


def load_yaml(path: str | os.PathLike[str]) -> tuple[Any, Sources]:
    """Read a YAML config file: its value (None for an empty file) and the :class:`Sources` of its keys.

    Raises:
        ConfigError: the file is missing, not UTF-8, not YAML, gives a key twice, or expands too far through
            aliases; the message starts with ``path:line:`` where a line is known.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found.")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte offset {err.start}).") from None
    value, lines = _read(text, str(path))
    return value, Sources(lines, default=str(path))


def parse_value(text: str, where: str) -> Any:
    """A ``--set`` value, read as YAML by the same loader (``0.1``, ``true``, ``[64, 64]``, ``null``)."""
    return _read(text, where)[0]


def deep_merge(base: Any, base_sources: Sources, update: Any, update_sources: Sources) -> tuple[Any, Sources]:
    """``update`` merged into ``base`` (mappings key by key, anything else replaced), with the merged sources."""
    if not (isinstance(base, dict) and isinstance(update, dict)):
        return copy.deepcopy(update), update_sources
    merged, sources = dict(base), Sources(dict(base_sources.origin), default=update_sources.default)
    for key, value in update.items():
        inner, inner_sources = deep_merge(base.get(key), base_sources.under((key,)), value,
                                          update_sources.under((key,)))
        merged[key] = inner
        sources.replace((key,), inner_sources)
        if (key,) in update_sources.origin:
            sources.origin[(key,)] = update_sources.origin[(key,)]
    return merged, sources


def read_config_files(*paths: str | os.PathLike[str]) -> tuple[dict[Any, Any], Sources]:
    """The YAML files deep-merged in order (later ones win), with the source of every key."""
    raw: dict[Any, Any] = {}
    sources = Sources()
    for path in paths:
        value, found = load_yaml(path)
        value = {} if value is None else value
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: a config must be a mapping of keys to values, got a {type(value).__name__}.")
        raw, sources = deep_merge(raw, sources, value, found)
    return raw, sources


def _set(config: dict[Any, Any], sources: Sources, keys: list[str], value: Any, where: str) -> None:
    node = config
    for depth, key in enumerate(keys[:-1]):
        if node.get(key) is None:
            node[key] = {}
        elif not isinstance(node[key], dict):
            parent = ".".join(keys[: depth + 1])
            raise ConfigError(f"{where}: `{parent}` is {node[key]!r}, not a mapping; give `{parent}` as a "
                              f"whole instead (`--set {parent}={{...}}`).")
        node = node[key]
    node[keys[-1]] = value
    sources.replace(tuple(keys), where)


def apply_overrides(
    config: Mapping[Any, Any], sources: Sources, overrides: Sequence[str], values: Mapping[str, Any] | None = None
) -> dict[Any, Any]:
    """``config`` with each ``a.b.c=value`` of ``overrides`` applied in order, then each entry of ``values``.

    ``values`` holds ``{"a.b.c": value}`` typed values from Python callers (not parsed); ``sources`` is updated in
    place.

    Missing (or null) mappings on the way are created; a non-mapping on the way is an error, since replacing it
    would silently drop what it held.
    """
    config = copy.deepcopy(dict(config))
    for override in overrides:
        where = f"--set {override}"
        dotted, equals, text = override.partition("=")
        keys = dotted.strip().split(".")
        if not equals or not all(keys):
            raise ConfigError(f"{where}: expected KEY=VALUE with a dotted key, e.g. `--set train.lr=0.01`.")
        _set(config, sources, keys, parse_value(text, where), where)
    for dotted, value in (values or {}).items():
        _set(config, sources, dotted.split("."), copy.deepcopy(value), f"`{dotted}` (given by the caller)")
    return config
