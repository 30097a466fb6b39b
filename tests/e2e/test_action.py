"""The composite action (action.yml), run locally the way a GitHub runner runs its steps.

The setup-python, apt-get and pip steps are skipped (this venv already has xarch, and the system
packages are installed); every later step's script runs with bash in a GitHub-like environment,
with `${{ ... }}` expressions substituted as GitHub would.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from conftest import ROOT

pytestmark = pytest.mark.e2e

ACTION = ROOT / "action.yml"
_EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


def _action() -> dict[str, Any]:
    data: dict[str, Any] = YAML(typ="safe").load(ACTION.read_text())
    return data


def substitute(text: str, inputs: Mapping[str, str]) -> str:
    """Replace the expressions action.yml uses; any other expression fails the test, not the step."""
    def one(m: re.Match[str]) -> str:
        expr = m.group(1)
        if expr.startswith("inputs."):
            return inputs[expr.removeprefix("inputs.")]
        if expr == "github.action_path":
            return str(ROOT)
        raise AssertionError(f"action.yml uses an expression this test cannot evaluate: {m.group(0)}")
    return _EXPR.sub(one, text)


@dataclass
class StepsResult:
    rc: int
    stdout: str
    stderr: str
    outputs: dict[str, str]
    summary: str


def run_action(workspace: Path, tmp: Path, **given: str) -> StepsResult:
    """Run the action's steps after setup-python/apt/pip with the given inputs; stop at the first failure."""
    action = _action()
    inputs = {k: str(v.get("default", "")) for k, v in action["inputs"].items()}
    unknown = set(given) - set(inputs)
    assert not unknown, f"not inputs of action.yml: {unknown}"
    inputs.update(given)
    steps = action["runs"]["steps"]
    assert steps[0]["uses"].startswith("actions/setup-python@")
    assert "apt-get install" in steps[1]["run"] and "qemu-user-static" in steps[1]["run"]
    assert "pip install" in steps[2]["run"] and "$GITHUB_ACTION_PATH" in steps[2]["run"]
    temp = tmp / "runner-temp"
    temp.mkdir()
    output, summary = temp / "github_output", temp / "step_summary"
    output.touch()
    summary.touch()
    env = {**os.environ, "COLUMNS": "200",
           # the venv's xrun first, as setup-python + pip put the installed one first on a runner
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "GITHUB_ACTIONS": "true", "GITHUB_OUTPUT": str(output), "GITHUB_STEP_SUMMARY": str(summary),
           "GITHUB_WORKSPACE": str(workspace), "RUNNER_TEMP": str(temp), "GITHUB_ACTION_PATH": str(ROOT)}
    rc, out, err = 0, "", ""
    for n, step in enumerate(steps[3:], 3):
        assert step.get("shell") == "bash", f"step {n} must say shell: bash (composite steps need a shell)"
        script = temp / f"step{n}.sh"
        script.write_text(substitute(step["run"], inputs))
        step_env = {**env, **{k: substitute(str(v), inputs) for k, v in (step.get("env") or {}).items()}}
        # GitHub's `shell: bash` is exactly this command line
        p = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)], cwd=workspace,
                           env=step_env, text=True, capture_output=True, timeout=900)
        rc, out, err = p.returncode, out + p.stdout, err + p.stderr
        if rc != 0:
            break
    outputs = dict(line.split("=", 1) for line in output.read_text().splitlines() if "=" in line)
    return StepsResult(rc, out, err, outputs, summary.read_text())


@pytest.fixture
def workspace(tmp_path: Path, probe_src: Path) -> Path:
    """A checkout holding matrix.yaml: arm/v7 on the Pi Zero fails (SIGILL), the other two cells pass."""
    ws = tmp_path / "workspace"
    ws.mkdir()
    (ws / "matrix.yaml").write_text(textwrap.dedent(f"""\
        name: probe
        project: {probe_src}
        build:
          output: "{ws}/dist/{{{{ name }}}}-{{{{ os }}}}-{{{{ arch }}}}{{{{ variant_suffix }}}}{{{{ ext }}}}"
        targets:
          - linux/arm/v7
          - linux/arm64
        profiles: [baseline, pi-zero]
        run: {{args: [hello], expect: {{exit: 0, stdout: "^probe hello$"}}}}
    """))
    return ws


def test_action_writes_reports_outputs_summary_and_annotations_and_fails_like_xrun(
        workspace: Path, tmp_path: Path) -> None:
    r = run_action(workspace, tmp_path, args="-j 2")
    assert r.rc == 1, r.stdout + r.stderr
    assert r.outputs["exit-code"] == "1"
    for key in ("json", "junit", "html"):
        assert Path(r.outputs[key]).is_file(), (key, r.outputs)
        assert Path(r.outputs[key]).is_relative_to(workspace / "xarch-report")
    report = json.loads(Path(r.outputs["json"]).read_text())
    verdicts = {c["id"]: c["verdict"] for c in report["cells"]}
    assert verdicts == {"linux/arm/v7:scratch:baseline": "ok", "linux/arm/v7:scratch:pi-zero": "unsupported-cpu",
                        "linux/arm64:scratch:baseline": "ok"}
    bad = next(c for c in report["cells"] if c["verdict"] != "ok")
    assert "<testsuites" in Path(r.outputs["junit"]).read_text()
    # the step summary: verdict line, the grid, and the failure with its fix
    assert "## xarch `matrix.yaml`: ❌ failed" in r.summary
    assert "| target | scratch<br>baseline | scratch<br>pi-zero |" in r.summary
    assert "| `linux/arm/v7` | ✅ ok" in r.summary and "❌ unsupported-cpu" in r.summary
    assert "#### cell `linux/arm/v7:scratch:pi-zero`: unsupported-cpu" in r.summary
    assert "linux/arm/v6" in bad["fix"] and "**fix:** build for what pi-zero" in r.summary
    # an annotation on the matrix line that declares the failing target (line 6), relative to the workspace
    assert re.search(r"^::error file=matrix\.yaml,line=6,title=linux/arm/v7%3Ascratch%3Api-zero "
                     r"unsupported-cpu::.*fix: build for what pi-zero", r.stdout, re.M), r.stdout


def test_action_passes_shard_and_args_through_unglobbed_and_exits_0(workspace: Path, tmp_path: Path) -> None:
    # a file that an unquoted glob in the script would expand `profile=base*` into
    (workspace / "profile=base-decoy").touch()
    r = run_action(workspace, tmp_path, shard="2/2", args="--only profile=base* -j 2",
                   **{"report-dir": "out/with space"})
    assert r.rc == 0, r.stdout + r.stderr
    assert r.outputs["exit-code"] == "0"
    assert r.outputs["json"] == str(workspace / "out" / "with space" / "report.json")
    report = json.loads(Path(r.outputs["json"]).read_text())
    # --only keeps the two baseline cells; of those sorted by id, shard 2/2 is the second
    assert [c["id"] for c in report["cells"]] == ["linux/arm64:scratch:baseline"]
    assert "✅ passed" in r.summary
    assert "::error" not in r.stdout


def test_action_metadata_is_complete() -> None:
    action = _action()
    assert action["runs"]["using"] == "composite"
    assert set(action["inputs"]) == {"matrix", "engine", "args", "python-version", "shard", "report-dir"}
    assert {k: v.get("default") for k, v in action["inputs"].items()} == {
        "matrix": "matrix.yaml", "engine": "local", "args": "", "python-version": "3.11", "shard": "",
        "report-dir": "xarch-report"}
    assert set(action["outputs"]) == {"json", "junit", "html", "exit-code"}
    assert all(o["value"].startswith("${{ steps.xrun.outputs.") for o in action["outputs"].values())
    # inputs reach scripts only through env:, so no input value is ever parsed as shell code
    for step in action["runs"]["steps"]:
        assert "${{" not in step.get("run", ""), step
