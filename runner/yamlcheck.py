"""What the two YAML front doors (matrix.yaml and images/*.yaml) share: line numbers of ruamel nodes, and
the words of their errors ("must be a string, got a number (3)", "unknown key (did you mean 'run'?);
allowed: ..."), so a mistake reads the same in either file.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Collection
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from .errors import ConfigError


def line_of(node: Any, key: Any = None) -> int | None:
    """1-based line of a key in a mapping, an item of a sequence, or the node itself."""
    try:
        if key is not None and isinstance(node, CommentedMap):
            return int(node.lc.key(key)[0]) + 1
        if key is not None and isinstance(node, CommentedSeq):
            return int(node.lc.item(key)[0]) + 1
        if hasattr(node, "lc"):
            return int(node.lc.line) + 1
    except (KeyError, IndexError, TypeError, AttributeError):
        pass
    return None


def kind_of(v: Any) -> str:
    """How an error names a value it did not expect."""
    if v is None:
        return "nothing (null)"
    if isinstance(v, bool):
        return f"a boolean ({str(v).lower()})"
    if isinstance(v, CommentedMap | dict):
        return "a mapping"
    if isinstance(v, CommentedSeq | list):
        return "a list"
    if isinstance(v, int | float):
        return f"a number ({v})"
    return f"{type(v).__name__} {v!r}"


def did_you_mean(word: str, choices: Collection[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def must_be(what: str, value: Any) -> str:
    return f"must be {what}, got {kind_of(value)}"


def unknown_key(key: str, allowed: Collection[str]) -> str:
    return f"unknown key{did_you_mean(key, allowed)}; allowed: {', '.join(allowed)}"


class Doc:
    """Error helper: turns a ruamel node position into file:line for a key path."""

    def __init__(self, file: str) -> None:
        self.file = file

    def err(self, msg: str, key: str, line: int | None) -> ConfigError:
        return ConfigError(msg, file=self.file, line=line, key=key)


class Validator:
    """The checks of one YAML file's values; every error names the file, the line and the key."""

    def __init__(self, file: str) -> None:
        self.d = Doc(file)

    def at(self, key: str, line: int | None) -> Callable[[str], ConfigError]:
        """An error factory for one key, for errors found later (e.g. while rendering)."""
        return lambda msg: self.d.err(msg, key, line)

    def mapping(self, node: Any, key: str, line: int | None, allowed: Collection[str]) -> CommentedMap:
        if not isinstance(node, CommentedMap):
            raise self.d.err(f"must be a mapping, got {kind_of(node)}", key, line)
        for k in node:
            if k not in allowed:
                raise self.d.err(unknown_key(str(k), allowed),
                                 f"{key}.{k}" if key else str(k), line_of(node, k))
        return node

    def seq(self, node: Any, key: str, line: int | None) -> CommentedSeq:
        if not isinstance(node, CommentedSeq):
            raise self.d.err(f"must be a list, got {kind_of(node)}", key, line)
        return node

    def string(self, node: Any, key: str, line: int | None, *, allow_empty: bool = False) -> str:
        if not isinstance(node, str):
            raise self.d.err(f"must be a string, got {kind_of(node)}", key, line)
        if not allow_empty and not node.strip():
            raise self.d.err("must not be empty", key, line)
        return node

    def env(self, node: Any, key: str, line: int | None) -> dict[str, str]:
        if node is None:
            return {}
        if not isinstance(node, CommentedMap):
            raise self.d.err(f"must be a mapping of NAME: value, got {kind_of(node)}", key, line)
        out: dict[str, str] = {}
        for k, v in node.items():
            kl = line_of(node, k)
            if not isinstance(k, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", k):
                raise self.d.err("is not a valid environment variable name", f"{key}.{k}", kl)
            if isinstance(v, bool) or not isinstance(v, str | int | float):
                raise self.d.err(f"must be a string (quote it), got {kind_of(v)}", f"{key}.{k}", kl)
            out[k] = str(v)
        return out

    def command(self, node: Any, key: str, line: int | None) -> tuple[str, ...] | str:
        if isinstance(node, str):
            if not node.strip():
                raise self.d.err("must not be empty", key, line)
            return node
        seq = self.seq(node, key, line)
        if not seq:
            raise self.d.err("must not be empty", key, line)
        return tuple(self.string(x, f"{key}[{i}]", line_of(seq, i), allow_empty=True)
                     for i, x in enumerate(seq))

    def boolean(self, node: Any, key: str, line: int | None) -> bool:
        if not isinstance(node, bool):
            raise self.d.err(f"must be true or false, got {kind_of(node)}", key, line)
        return node
