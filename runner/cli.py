"""`xrun`: the command line. One argparse tree; each command is a module of `commands/`.

Only main() exits; every error class has its own exit code. A command module has `add_parser(sub)`,
which registers its subcommand, and `run(ns) -> int`, which the subcommand names via set_defaults.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__, proc
from .commands import doctor, explain, images, profile, report_merge, run, workflow
from .commands import exec as exec_
from .errors import ConfigError, Interrupted, XarchError

# in `xrun --help` order; `run` is the default when the first word is not one of these
COMMANDS = (run, images, doctor, explain, exec_, profile, report_merge, workflow)


class UsageError(ConfigError):
    """A bad command line (exit 2). `plain`: printed without rich, as explain, report and gha always did
    (their output is made for pipes and files; a rich console would also read ':name:' as an emoji)."""

    def __init__(self, message: str, *, plain: bool) -> None:
        super().__init__(message, file="command line")
        self.plain = plain


class Parser(argparse.ArgumentParser):
    """The parser of every command and subcommand: a usage error is a ConfigError naming the help to read."""

    def __init__(self, *args: Any, plain_errors: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.plain_errors = plain_errors

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see `{self.prog} --help`)", plain=self.plain_errors)


def _tree() -> tuple[Parser, tuple[str, ...]]:
    p = Parser(prog="xrun", description="Cross-build Go targets and run each under qemu-user in real "
                                        "minimal root filesystems with a chosen CPU model.",
               epilog="`xrun MATRIX [OPTIONS]` is `xrun run MATRIX [OPTIONS]`; "
                      "`xrun COMMAND --help` shows a command's options.")
    p.add_argument("--version", action="version", version=f"xrun {__version__}")
    # metavar COMMAND, not argparse's {run,images,...}: that 50-column name pushed every help text to
    # column 24, so the longer ones wrapped; each command's help is one line of at most 62 characters
    sub = p.add_subparsers(dest="cmd", parser_class=Parser, title="commands", metavar="COMMAND")
    for mod in COMMANDS:
        cmd = mod.add_parser(sub)
        # who reports arguments no option takes, naming its --help: the command's own parser, but `xrun`
        # itself for run and images (their messages have always said `xrun --help`)
        cmd.set_defaults(cmd_parser=p if mod in (run, images) else cmd)
    return p, tuple(sub.choices)


def parser() -> Parser:
    """The whole command line: `xrun --help`, and every command's parser below it."""
    return _tree()[0]


def dispatch(argv: Sequence[str]) -> int:
    """Parse argv (a matrix path first means `run`) and run the command. XarchError propagates."""
    p, names = _tree()
    args = list(argv)
    if args and ((args[0] not in names and not args[0].startswith("-"))
                 or (args[0].startswith("-") and args[0] not in ("-h", "--help", "--version"))):
        args = ["run", *args]
    # parse_known_args: `xrun exec` hands everything after BINARY to the binary untouched (REMAINDER), and
    # leftovers are reported by cmd_parser, not always by `xrun` as parse_args would
    ns, extra = p.parse_known_args(args or ["run"])
    if getattr(ns, "run", None) is None:
        ns, extra = p.parse_known_args(["run"])
    if extra:
        ns.cmd_parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return int(ns.run(ns))


def _err_console() -> Any:
    from rich.console import Console  # not before it is needed: `xrun exec` starts a test per call

    return Console(stderr=True, highlight=False)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return dispatch(sys.argv[1:] if argv is None else argv)
    except XarchError as e:
        from .output.text import plain, safe

        if isinstance(e, UsageError) and e.plain:
            print(f"xrun: {plain(e)}", file=sys.stderr)
        else:
            _err_console().print(f"[bold red]xrun:[/] {safe(e)}", markup=True, highlight=False, soft_wrap=True)
        return e.exit_code
    except KeyboardInterrupt:
        proc.stop()
        _err_console().print("[bold red]xrun:[/] interrupted")
        return Interrupted.exit_code
    except BrokenPipeError:
        # `xrun ... | head`: the reader left. Say nothing (no traceback) and exit as a shell would; stdout
        # goes to /dev/null so the interpreter's final flush does not fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
