"""`xrun exec [--image I] [--profile P] [--timeout S] BINARY ARGS...`: runner/execwrap.py as a command
(a `go test -exec` wrapper); the binary's exit status is the command's."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import ConfigError
from . import Subparsers


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "exec", help="run a binary in one cell (a `go test -exec` wrapper)",
        description="Run a binary in one xarch cell (a `go test -exec` wrapper).")
    p.add_argument("--image", default="scratch", help="runtime image (default scratch)")
    p.add_argument("--profile", default="baseline",
                   help="CPU profile: baseline, host, a hardware profile (pi-zero, ...) or a qemu model")
    p.add_argument("--timeout", type=float, default=None, help="seconds; the whole process tree is killed")
    p.add_argument("--env", action="append", default=[], metavar="NAME[=VALUE]",
                   help="pass NAME (even a denied one) or set NAME=VALUE in the cell (repeatable)")
    p.add_argument("--no-env", action="store_true",
                   help="pass only GO*, TEST* and TERM of the caller's environment (and what --env names)")
    p.add_argument("--install-wrappers", metavar="DIR",
                   help="write go_linux_<arch>_exec wrappers (with these options) into DIR and exit")
    p.add_argument("--launcher", action="store_true",
                   help="print the compiled launcher's command line with these options and exit: "
                        "go test -exec \"$(xrun exec --launcher --profile P)\" starts no Python on a passing run")
    p.add_argument("--explain-exit", metavar="RECORD", help=argparse.SUPPRESS)    # the launcher's hand-over
    p.add_argument("binary", nargs="?")
    # everything after BINARY is the binary's, its own flags included
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(run=run)
    return p


def run(ns: argparse.Namespace) -> int:
    import shlex

    from ..execwrap import explain_recorded, install_wrappers, launcher_command, run_in_cell

    opts = ["--image", ns.image, "--profile", ns.profile] + (
        ["--timeout", str(ns.timeout)] if ns.timeout else []) + [f"--env={e}" for e in ns.env] + (
        ["--no-env"] if ns.no_env else [])
    if ns.install_wrappers:
        wrappers, notes = install_wrappers(Path(ns.install_wrappers), opts)
        for w in wrappers:
            print(w)
        for n in notes:
            print(f"note: {n}", file=sys.stderr)
        return 0
    if ns.explain_exit:
        return explain_recorded(ns.explain_exit)
    if ns.launcher:
        print(shlex.join(launcher_command(opts)))
        return 0
    if not ns.binary:
        raise ConfigError("needs a BINARY to run", file="command line", key="xrun exec")
    return run_in_cell(ns.binary, ns.args, image=ns.image, profile=ns.profile, timeout=ns.timeout,
                       env_items=ns.env, no_env=ns.no_env)
