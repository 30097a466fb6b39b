"""What the two YAML front doors (matrix.yaml and images/*.yaml) share: line numbers of ruamel nodes, and
the words of their errors ("must be a string, got a number (3)", "unknown key (did you mean 'run'?);
allowed: ..."), so a mistake reads the same in either file.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq


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
