"""`xrun gha`: print a GitHub Actions workflow that runs a matrix in N shards and merges their reports.

Each shard job runs the xarch composite action with `shard: I/N` and uploads its JSON report; a
merge job downloads them all and runs `xrun report merge`, which writes the whole run's JUnit, HTML
and step summary and fails the workflow exactly when an unsharded `xrun run` would fail.
"""

from __future__ import annotations

import io
import re
import shlex
from collections.abc import Mapping
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.scalarstring import LiteralScalarString

from .errors import ConfigError

RUNNER = "ubuntu-24.04"
ARM_RUNNER = "ubuntu-24.04-arm"
# A runner choice, not a platform fact: a shard of only these GOARCHes can go to GitHub's arm64
# runners (qemu-user runs there too, and arm64 cells of the `host` profile run natively).
ARM_RUNNER_GOARCHES = frozenset({"arm", "arm64"})
REPORT_DIR = "xarch-report"
SHARDS_DIR = "xarch-shards"


def shard_slug(i: int, n: int) -> str:
    """An artifact name for shard i of n: artifact names may not hold '/'."""
    return f"xarch-shard-{i}-of-{n}"


def pip_spec(uses: str) -> str:
    """What `pip install` needs to get the same xarch as the action `uses:` names."""
    if uses.startswith("./") or uses == ".":
        return uses.rstrip("/") or "."
    repo, _, ref = uses.partition("@")
    owner, name, *sub = [*repo.split("/"), "", ""][:max(2, repo.count("/") + 1)]
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*", owner) or not re.fullmatch(r"[A-Za-z0-9._-]+", name) \
            or any(not part for part in sub) or (ref and not re.fullmatch(r"[A-Za-z0-9._/-]+", ref)):
        raise ConfigError(f"'{uses}' is not an action reference: use ./ (this repository) or "
                          "owner/repo[/path]@ref", file="command line", key="--uses")
    spec = f"git+https://github.com/{owner}/{name}" + (f"@{ref}" if ref else "")
    return spec + (f"#subdirectory={'/'.join(sub)}" if sub else "")


def arm_shards(matrix_path: str, shards: int) -> set[int]:
    """The shards (1-based) whose cells all target an arm GOARCH, from the plan `--shard I/N` would run."""
    from . import matrix as matrix_mod
    from .expand import select

    plan = matrix_mod.load(matrix_path)
    out = set()
    for i in range(1, shards + 1):
        cells = select(plan, (), (i, shards)).cells
        if cells and all(c.target.arch in ARM_RUNNER_GOARCHES for c in cells):
            out.add(i)
    return out


def _check_shards(matrix_path: str, shards: int) -> None:
    from . import matrix as matrix_mod

    if shards < 1:
        raise ConfigError(f"--shards must be at least 1, got {shards}", file="command line", key="--shards")
    cells = len(matrix_mod.load(matrix_path).cells)
    if shards > cells:
        raise ConfigError(f"--shards {shards} is more than the matrix's {cells} cells, so some shard would be "
                          f"empty (and `xrun run --shard` refuses an empty shard); use --shards {cells} or fewer",
                          file="command line", key="--shards")


def workflow_dict(matrix_path: str, shards: int, native_arm: bool = False, python: str = "3.11",
                  uses: str = "./") -> dict[str, Any]:
    """The workflow as data (see workflow())."""
    _check_shards(matrix_path, shards)
    arm = arm_shards(matrix_path, shards) if native_arm else set()
    include = [{"shard": f"{i}/{shards}", "runner": ARM_RUNNER if i in arm else RUNNER,
                "artifact": shard_slug(i, shards)} for i in range(1, shards + 1)]
    merge_cmd = (f"xrun report merge {SHARDS_DIR}/*/report.json --shards {shards} --matrix {_sh(matrix_path)} "
                 f"--json {REPORT_DIR}/report.json --junit {REPORT_DIR}/junit.xml --html {REPORT_DIR}/report.html")
    return {
        "name": "xarch",
        "on": {"push": None, "pull_request": None, "workflow_dispatch": None},
        "permissions": {"contents": "read"},
        "jobs": {
            "xarch": {
                "name": "xarch ${{ matrix.shard }}",
                "runs-on": "${{ matrix.runner }}",
                "strategy": {"fail-fast": False, "matrix": {"include": include}},
                "steps": [
                    {"uses": "actions/checkout@v4"},
                    {"id": "xarch", "uses": uses,
                     "with": {"matrix": matrix_path, "shard": "${{ matrix.shard }}", "python-version": python,
                              "report-dir": REPORT_DIR}},
                    # also when xrun failed: the failing shard's report is the one the merge needs most
                    {"if": "${{ !cancelled() }}", "uses": "actions/upload-artifact@v4",
                     "with": {"name": "${{ matrix.artifact }}", "path": "${{ steps.xarch.outputs.json }}",
                              "if-no-files-found": "error"}},
                ],
            },
            "merge": {
                "needs": "xarch",
                # after failing shards too: the merged summary is where their failures are explained
                "if": "${{ !cancelled() }}",
                "runs-on": RUNNER,
                "steps": [
                    {"uses": "actions/checkout@v4"},
                    {"uses": "actions/setup-python@v5", "with": {"python-version": python}},
                    {"name": "Install xarch", "run": f"pip install {_sh(pip_spec(uses))}"},
                    {"uses": "actions/download-artifact@v4",
                     "with": {"pattern": "xarch-shard-*", "path": SHARDS_DIR}},
                    {"name": "Merge the shard reports", "run": LiteralScalarString(merge_cmd + "\n")},
                    {"if": "${{ !cancelled() }}", "uses": "actions/upload-artifact@v4",
                     "with": {"name": "xarch-report", "path": f"{REPORT_DIR}/"}},
                ],
            },
        },
    }


def _sh(s: str) -> str:
    """Quote for bash only when needed, so the common case stays readable in the YAML."""
    return shlex.quote(s)


def _dump(data: Mapping[str, Any]) -> str:
    yaml = YAML()
    yaml.default_flow_style = False
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096       # a long run: line folded by the emitter would still work, but reads badly
    buf = io.StringIO()
    yaml.dump(dict(data), buf)
    return buf.getvalue()


def workflow(matrix_path: str, shards: int, native_arm: bool = False, python: str = "3.11",
             uses: str = "./") -> str:
    """A GitHub Actions workflow (YAML text): N shard jobs running the action, then a merge job.

    `uses` names the action: "./" (this repository) or a published "owner/repo@ref". With
    `native_arm`, shards whose cells are all arm/arm64 targets run on GitHub's arm64 runners.
    Raises ConfigError when the matrix is invalid or `shards` would leave a shard empty.
    """
    flags = f" --shards {shards}" + (" --native-arm" if native_arm else "")
    head = (f"# Generated by `xrun gha {matrix_path}{flags}`. Each shard job runs `xrun run --shard I/{shards}` "
            "through the\n# xarch action and uploads its JSON report; the merge job joins them "
            "(`xrun report merge`) into one\n# report, JUnit file, HTML page and step summary.\n")
    return head + _dump(workflow_dict(matrix_path, shards, native_arm, python, uses))
