"""One module per `xrun` command: `add_parser(sub)` registers it in cli's one argparse tree and names
`run(ns) -> int` as its handler (set_defaults). Heavy imports wait until a command runs."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from rich.console import Console

# what add_parser receives: the `xrun` parser's subparsers action
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def out_console() -> Console:
    """The stdout console of run and images."""
    from rich.console import Console

    # CI logs are not terminals: rich would wrap explanations at 80 columns there
    wide = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 120
    return Console(stderr=False, highlight=False, width=wide)
