"""`xrun gha [MATRIX] [--shards N] [--native-arm]`: print (or write) runner/gha.py's workflow; 2 on bad input."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import XarchError
from ..output.text import plain
from . import Subparsers


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "gha", plain_errors=True, help="print a GitHub Actions workflow that runs the matrix in shards",
        description="Print a GitHub Actions workflow that runs the matrix in N parallel shards and merges "
                    "their reports.")
    p.add_argument("matrix", nargs="?", default="matrix.yaml")
    p.add_argument("--shards", type=int, default=1, metavar="N", help="parallel jobs (default 1)")
    p.add_argument("--native-arm", action="store_true",
                   help="run shards whose cells are all arm/arm64 on GitHub's arm runners (ubuntu-24.04-arm)")
    p.add_argument("--python", default="3.11", metavar="VERSION", help="Python for the jobs (default 3.11)")
    p.add_argument("--uses", default="./", metavar="ACTION",
                   help="the xarch action: ./ (this repository, the default) or owner/repo@ref")
    p.add_argument("-o", "--output", metavar="PATH", help="write the workflow here instead of stdout")
    p.set_defaults(run=run)
    return p


def run(ns: argparse.Namespace) -> int:
    from ..gha import workflow

    try:
        text = workflow(ns.matrix, ns.shards, ns.native_arm, ns.python, ns.uses)
    except XarchError as e:
        print(f"xrun: {plain(e)}", file=sys.stderr)
        return e.exit_code
    if ns.output:
        out = Path(ns.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0
