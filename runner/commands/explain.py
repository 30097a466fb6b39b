"""`xrun explain BINARY [--image I]... [--profile P]... [--json]`: print runner/explain.py's prediction;
0, or 2 on bad input."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import XarchError
from ..output.text import plain
from . import Subparsers


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "explain", plain_errors=True, help="what a built binary is, and which images and CPUs will run it",
        description="Say what a built binary is and predict, without running it, whether each image and "
                    "CPU profile will run it.")
    p.add_argument("binary", help="the file to explain")
    p.add_argument("--image", action="append", metavar="I",
                   help="an image to predict for (repeatable; default: scratch, alpine, distroless-static, "
                        "distroless-base)")
    p.add_argument("--profile", action="append", metavar="P",
                   help="a CPU profile: baseline, host, a hardware profile or a qemu model (repeatable; "
                        "default: baseline)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--isa", action="store_true",
                   help="list, per function outside the Go standard library, the ISA extensions its code uses "
                        "(facts, not a verdict: a CPU check may guard them)")
    p.set_defaults(run=run)
    return p


def run(ns: argparse.Namespace) -> int:
    from ..explain import DEFAULT_IMAGES, DEFAULT_PROFILES, explain, render_text

    try:
        result = explain(Path(ns.binary), ns.image or DEFAULT_IMAGES, ns.profile or DEFAULT_PROFILES)
    except XarchError as e:
        print(f"xrun: {plain(e)}", file=sys.stderr)
        return e.exit_code
    if ns.isa:
        from ..artifact import inspect
        from ..forensics.isa import function_extensions

        facts = inspect(ns.binary)
        result["function_isa"] = function_extensions(ns.binary, facts.goarch) if facts.goarch else {}
    text = plain(render_text(result))
    if ns.isa and not ns.json:
        rows = result["function_isa"]
        text += ("\nISA extensions per function (outside the Go standard library):\n"
                 + "".join(f"  {plain(fn)}: {', '.join(exts)}\n" for fn, exts in rows.items())
                 if rows else "\nno function outside the Go standard library uses an extension beyond the "
                 "arch's baseline\n")
    sys.stdout.write(json.dumps(result, indent=2) + "\n" if ns.json else text)
    return 0
