"""Warm re-runs build only what changed for go build: real go list, real builds, real cells."""

from __future__ import annotations

import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import XrunResult

pytestmark = pytest.mark.e2e

MATRIX = """
    name: dep
    targets: [linux/amd64, linux/arm64]
    run: {{args: [], expect: {{stdout: "^hello"}}}}
    # {comment}
"""


def _project(d: Path) -> None:
    """A module whose main package prints what a dependency package returns (an embedded file)."""
    files = {
        "go.mod": "module example.com/dep\n\ngo 1.22\n",
        "main.go": 'package main\n\nimport (\n\t"fmt"\n\n\t"example.com/dep/lib"\n)\n\n'
                   "func main() { fmt.Println(lib.Greeting()) }\n",
        "lib/lib.go": 'package lib\n\nimport _ "embed"\n\n//go:embed greeting.txt\nvar greeting string\n\n'
                      "func Greeting() string { return greeting }\n",
        "lib/greeting.txt": "hello",
        "README.md": "# dep\n",
    }
    for name, text in files.items():
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_text(text)


def _executed(r: XrunResult) -> list[str]:
    assert r.rc == 0, r.out + r.err
    return sorted(b["target"] for b in r.report["builds"] if not b["cached"])


def test_unrelated_edits_build_nothing_and_edits_go_build_reads_rebuild(
        xrun_matrix: Callable[..., XrunResult], tmp_path: Path) -> None:
    _project(tmp_path)      # the matrix, README.md and dist/ live inside the project, as in a user's repo

    def run(comment: str = "first") -> XrunResult:
        return xrun_matrix(MATRIX.format(comment=comment), project=tmp_path)

    assert _executed(run()) == ["linux/amd64", "linux/arm64"]
    (tmp_path / "README.md").write_text("# dep\n\nEdited.\n")
    (tmp_path / ".pytest_cache").mkdir()
    (tmp_path / ".pytest_cache" / "v").write_text("{}")
    assert _executed(run("edited comment")) == []
    # a file go build skips for these targets (another GOOS) changes nothing either
    (tmp_path / "lib" / "lib_windows.go").write_text("package lib\n")
    assert _executed(run("edited comment")) == []

    lib = tmp_path / "lib" / "lib.go"
    lib.write_text(lib.read_text().replace("return greeting", 'return greeting + " again"'))
    r = run("edited comment")
    assert _executed(r) == ["linux/amd64", "linux/arm64"]
    assert r.cell("linux/amd64:scratch:baseline")["stdout"] == "hello again\n"
    (tmp_path / "lib" / "extra.go").write_text("package lib\n\nfunc Extra() int { return 1 }\n")
    assert _executed(run("edited comment")) == ["linux/amd64", "linux/arm64"]
    (tmp_path / "lib" / "greeting.txt").write_text("hello, embedded")
    r = run("edited comment")
    assert _executed(r) == ["linux/amd64", "linux/arm64"]
    assert r.cell("linux/arm64:scratch:baseline")["stdout"] == "hello, embedded again\n"
    assert _executed(run("edited comment")) == []


def test_in_a_git_checkout_the_vcs_stamp_go_build_writes_is_an_input(
        xrun_matrix: Callable[..., XrunResult], tmp_path: Path, go_bin: Path) -> None:
    _project(tmp_path)
    (tmp_path / ".gitignore").write_text("dist/\nreport.json\n")
    body = textwrap.dedent(MATRIX.format(comment="c")).replace("linux/amd64, linux/arm64", "linux/amd64")

    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args], cwd=tmp_path,
                       check=True, capture_output=True)

    def stamp() -> str:
        out = subprocess.run([str(go_bin), "version", "-m", str(tmp_path / "dist/dep-linux-amd64")],
                             capture_output=True, text=True, check=True).stdout
        return next(ln.split("=", 1)[1] for ln in out.splitlines() if "vcs.modified=" in ln)

    git("init", "-q")
    assert _executed(xrun_matrix(body, project=tmp_path)) == ["linux/amd64"]
    assert stamp() == "true"        # nothing committed yet
    git("add", "-A")
    git("commit", "-qm", "init")
    assert _executed(xrun_matrix(body, project=tmp_path)) == ["linux/amd64"]    # a revision, and clean
    assert stamp() == "false"
    (tmp_path / "README.md").write_text("# dep\n\nEdited.\n")
    # go build would stamp vcs.modified=true now: the cached binary (false) would be a wrong artifact
    assert _executed(xrun_matrix(body, project=tmp_path)) == ["linux/amd64"]
    assert stamp() == "true"
    (tmp_path / "README.md").write_text("# dep\n\nEdited twice.\n")
    assert _executed(xrun_matrix(body, project=tmp_path)) == []


def test_a_build_with_before_steps_still_keys_on_every_project_file(
        xrun_matrix: Callable[..., XrunResult], tmp_path: Path) -> None:
    proj = tmp_path / "proj"        # the report xrun writes stays out of the project tree
    _project(proj)
    (proj / "README.md").write_text("hello from the readme")
    # the before step reads README.md, which go list never names: only the whole tree is safe
    body = MATRIX.format(comment="c").replace("linux/amd64, linux/arm64", "linux/amd64") + \
        '    build: {before: [[cp, README.md, lib/greeting.txt]], output: "@OUT@"}\n'
    assert _executed(xrun_matrix(body, project=proj)) == ["linux/amd64"]
    xrun_matrix(body, project=proj)     # the step's own write changed the tree once
    assert _executed(xrun_matrix(body, project=proj)) == []
    (proj / "README.md").write_text("hello, edited readme")
    r = xrun_matrix(body, project=proj)
    assert _executed(r) == ["linux/amd64"]
    assert r.cell("linux/amd64:scratch:baseline")["stdout"] == "hello, edited readme\n"
