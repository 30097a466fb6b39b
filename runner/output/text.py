"""Text from input, a tool or a binary, made safe to show: no markup, no control characters.

A cell's stderr may hold terminal escape sequences (erase the line and colour a forged "ok", set the
window title, make links) and a matrix value or an error message may hold square brackets, which
rich would read as markup (a `MarkupError`, or worse, styling). Everything xarch prints that it did
not write itself goes through `plain` (for print/write) or `safe` (for a rich console).
"""

from __future__ import annotations

import re

# C0 and C1 controls but newline and tab, DEL, and the Unicode line separators and bidi controls
# (which reorder what a reader sees: "Trojan Source")
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMES = {"\r": "\\r", "\x1b": "\\x1b", "\x07": "\\x07", "\x08": "\\x08", "\x00": "\\x00"}


def _visible(m: re.Match[str]) -> str:
    c = m.group(0)
    return _NAMES.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


def plain(text: object) -> str:
    """The text with every control character but newline and tab shown as an escape (`\\x1b`)."""
    return _CONTROL.sub(_visible, str(text))


def safe(text: object) -> str:
    """`plain`, with rich markup escaped: for interpolating data into a console.print() string."""
    from rich.markup import escape  # rich loads with the console that prints this, not before

    return escape(plain(text))


def human_size(n: float) -> str:
    """A byte count for people: 512 B, 3.1 MiB, 1.2 GiB (GiB is the largest unit)."""
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
