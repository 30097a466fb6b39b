"""The docker engine gives the local engine's verdicts, cleans up after itself and after crashed runs.

Every verdict is produced from real binaries through both engines (and both docker modes) and the
verdicts must be equal. Needs docker.io; the session fixture starts dockerd when it is not running.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import FIXTURES, ROOT

pytestmark = pytest.mark.e2e

docker = pytest.importorskip("docker")


# the daemon: the docker_daemon fixture in tests/e2e/conftest.py

@pytest.fixture
def client(docker_daemon: None) -> Iterator[Any]:
    c = docker.from_env()
    yield c
    c.close()


def _mine(client: Any, owner_prefix: str) -> list[dict[str, Any]]:
    """Containers whose owner label starts with the prefix (the list endpoint: no per-container
    inspect that would race with other workers removing theirs)."""
    return [c for c in client.api.containers(all=True, filters={"label": "xarch.run"})
            if (c.get("Labels") or {}).get("xarch.owner", "").startswith(owner_prefix)]


@pytest.fixture(autouse=True)
def no_leftover_containers(request: pytest.FixtureRequest) -> Iterator[None]:
    """After every test, no container made by this process is left."""
    yield
    if "docker_daemon" not in request.fixturenames:
        return
    from xarch.engines.docker import owner_label

    c = docker.from_env()
    try:
        left = _mine(c, owner_label())
        assert left == [], [(x["Id"][:12], x["Labels"]) for x in left]
    finally:
        c.close()


# -- building the fixtures ------------------------------------------------------------------------

def _build(d: Path, project: Path, targets: str, command: str | None = None) -> dict[str, Path]:
    from xarch import matrix
    from xarch.pipeline import build_all

    d.mkdir(parents=True, exist_ok=True)
    m = d / "matrix.yaml"
    cmd = f"  command: {command}\n" if command else ""
    m.write_text(f"name: x\nproject: {project}\nbuild:\n{cmd}  output: \"{d}/{{{{ target | replace('/', '-') }}}}\"\n"
                 f"targets: {targets}\nrun: {{args: [hello]}}\n")
    builds = build_all(matrix.load(m), jobs=2)
    assert all(b.artifact for b in builds.values()), {k: b.explanation for k, b in builds.items()}
    return {k: b.artifact for k, b in builds.items() if b.artifact}


PLAIN = ["linux/amd64", "linux/386", "linux/riscv64", "linux/arm64", "linux/arm/v7", "linux/amd64/v4"]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory, probe_src: Path) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("docker-parity")
    out = {f"plain {k}": v for k, v in _build(d / "plain", probe_src, f"[{', '.join(PLAIN)}]").items()}
    out["wrongarch linux/arm64"] = _build(d / "wrongarch", probe_src,
                                          "[{target: linux/arm64, env: {GOARCH: amd64}}]")["linux/arm64"]
    out["pie linux/amd64"] = _build(d / "pie", probe_src, "[linux/amd64]",
                                    '[go, build, -buildmode=pie, -o, "{{ output }}", .]')["linux/amd64"]
    out["cgo linux/amd64"] = _build(d / "cgo", probe_src,
                                    '[{target: linux/amd64, env: {CGO_ENABLED: "1"}}]')["linux/amd64"]
    out["cgocxx linux/amd64"] = _build(d / "cgocxx", FIXTURES / "cgocxx",
                                       '[{target: linux/amd64, env: {CGO_ENABLED: "1"}}]')["linux/amd64"]
    for k, v in _build(d / "sandbox", FIXTURES / "sandbox", "[linux/amd64, linux/arm64]").items():
        out[f"sandbox {k}"] = v
    return out


# -- running cells through engines ----------------------------------------------------------------

def _cell(spec: str, image: str, profile: str, args: tuple[str, ...]) -> Any:
    from xarch.plan import Cell, Target, builtin_profile

    os_, arch, *rest = spec.split("/")
    t = Target(spec, os_, arch, rest[0] if rest else None)
    prof = builtin_profile(profile)
    cpu = prof.model_for(t)
    assert cpu is not None, (spec, profile)
    return Cell(t, image, prof, cpu, args, {})


@pytest.fixture(params=["container", "pool"])
def engines(request: pytest.FixtureRequest, docker_daemon: None) -> Iterator[tuple[Any, Any]]:
    """(local engine, docker engine in this mode), both entered for one test."""
    from xarch.engines.docker import DockerEngine
    from xarch.engines.local import LocalEngine

    with LocalEngine() as local, DockerEngine(request.param) as dock:
        dock.preflight(())
        yield local, dock


def _run(engine: Any, cell: Any, artifact: Path, run: Any) -> tuple[Any, Any]:
    from xarch.classify import classify
    from xarch.pipeline import RootfsProvider

    root = RootfsProvider(engine.empty_root).get(cell)
    ev = engine.run_cell(cell, artifact, root, run)
    return classify(cell, ev, run.expect, run.timeout), ev


def _parity(engines: tuple[Any, Any], cases: list[tuple[Any, Path, Any]]) -> list[tuple[str, Any, Any]]:
    """Run each (cell, artifact, run) through both engines; the verdicts (and what ran) must be equal."""
    local, dock = engines
    out = []
    for cell, art, run in cases:
        vl, el = _run(local, cell, art, run)
        vd, ed = _run(dock, cell, art, run)
        where = (cell.id, dock.mode, vl, vd, el.stderr[-300:], ed.stderr[-300:], ed.infra, ed.path)
        assert vd.verdict == vl.verdict, where
        assert (ed.ran, ed.exit_code, ed.signal, ed.timed_out, ed.loader_missing) == \
            (el.ran, el.exit_code, el.signal, el.timed_out, el.loader_missing), where
        assert ed.notes == el.notes and ed.emulator == el.emulator and ed.cpu == el.cpu, where
        if vl.ok:
            assert ed.stdout == el.stdout, where
        if ed.ran:
            assert ed.extra["docker_mode"] == dock.mode, ed.extra
        out.append((vl.verdict, el, ed))
    return out


def test_ok_on_several_arches_in_scratch_and_alpine(engines, artifacts):
    from xarch.plan import Expect, RunSpec

    run = RunSpec(("hello",), timeout=120, expect=Expect(0, "^probe hello$"))
    cases = [(_cell(t, img, "baseline", ("hello",)), artifacts[f"plain {t}"], run)
             for t in ["linux/amd64", "linux/386", "linux/riscv64", "linux/arm64", "linux/arm/v7"]
             for img in ("scratch", "alpine")]
    cases.append((_cell("linux/amd64", "alpine", "host", ("hello",)), artifacts["plain linux/amd64"], run))
    res = _parity(engines, cases)
    assert [v for v, _, _ in res] == ["ok"] * len(cases)
    # the 386 emulator work-around is on record in both engines
    assert any("asyncpreemptoff=1" in n for n in res[2][2].notes)


def test_exit_status_and_wrong_output(engines, artifacts):
    from xarch.plan import Expect, RunSpec

    art = artifacts["plain linux/arm64"]
    res = _parity(engines, [
        (_cell("linux/arm64", "scratch", "baseline", ("exit", "3")), art, RunSpec(("exit", "3"))),
        (_cell("linux/arm64", "alpine", "baseline", ("print", "goodbye")), art,
         RunSpec(("print", "goodbye"), expect=Expect(0, "^hello"))),
    ])
    assert [v for v, _, _ in res] == ["exit-status", "wrong-output"]
    assert res[0][2].exit_code == 3


def test_static_verdicts(engines, artifacts):
    """exec-format-error, missing-loader and missing-library (the first two decided before running)."""
    from xarch.plan import Expect, RunSpec

    run = RunSpec(("hello",), timeout=120)
    res = _parity(engines, [
        (_cell("linux/arm64", "scratch", "baseline", ("hello",)), artifacts["wrongarch linux/arm64"], run),
        (_cell("linux/amd64", "scratch", "baseline", ("hello",)), artifacts["pie linux/amd64"], run),
        (_cell("linux/amd64", "alpine", "baseline", ("hello",)), artifacts["cgo linux/amd64"], run),
        (_cell("linux/amd64", "alpine", "host", ("hello",)), artifacts["cgo linux/amd64"], run),
        (_cell("linux/amd64", "distroless-base", "baseline", ()), artifacts["cgocxx linux/amd64"],
         RunSpec((), expect=Expect(0, "^answer 42$"))),
    ])
    assert [v for v, _, _ in res] == ["exec-format-error", "missing-loader", "missing-loader", "missing-loader",
                                      "missing-library"]
    assert "libstdc++.so.6" in res[4][2].stderr and res[4][2].exit_code == 127


def test_cpu_verdicts_and_crash(engines, artifacts):
    from xarch.plan import RunSpec

    run = RunSpec(("hello",), timeout=120)
    res = _parity(engines, [
        (_cell("linux/arm/v7", "scratch", "pi-zero", ("hello",)), artifacts["plain linux/arm/v7"], run),
        (_cell("linux/amd64/v4", "scratch", "baseline", ("hello",)), artifacts["plain linux/amd64/v4"], run),
        (_cell("linux/arm64", "scratch", "baseline", ("nil",)), artifacts["plain linux/arm64"], RunSpec(("nil",))),
        (_cell("linux/amd64", "alpine", "baseline", ("nil",)), artifacts["plain linux/amd64"], RunSpec(("nil",))),
    ])
    assert [v for v, _, _ in res] == ["unsupported-cpu", "emulation-unsupported", "crashed", "crashed"]
    # qemu is not PID 1 in either mode, so its own SIGILL ends the cell (exit 132 -> signal 4)
    assert res[0][2].signal == 4
    assert "avx512f" in " ".join(res[1][2].tcg_missing)


def _procs_with(marker: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            with contextlib.suppress(OSError):
                if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(pid)
    return found


@pytest.mark.parametrize("profile", ["baseline", "host"])
def test_timeout_kills_the_tree_and_the_container(engines, artifacts, client, profile):
    from xarch.plan import RunSpec

    marker = f"xarch-marker-{uuid.uuid4().hex}"
    args = ("sleepfork", marker)
    t0 = time.monotonic()
    res = _parity(engines, [(_cell("linux/amd64", "scratch", profile, args), artifacts["plain linux/amd64"],
                             RunSpec(args, timeout=3))])
    assert time.monotonic() - t0 < 60
    assert res[0][0] == "timeout" and res[0][2].timed_out
    assert 3 <= res[0][2].duration_s < 10
    time.sleep(0.5)
    assert _procs_with(marker) == []
    # in pool mode the pooled container lives on for the next cell, with nothing left running in it
    dock = engines[1]
    for c in client.containers.list(filters={"label": f"xarch.run={dock.run_id}"}):
        procs = c.top(ps_args="-o pid,args")["Processes"]
        assert len(procs) == 1 and ".xarch/init" in procs[0][-1], procs


def test_sandbox_semantics_match(engines, artifacts):
    """stdin, a fresh /tmp per cell (only where the image has one), the injected /etc files, cwd, uid."""
    from xarch.plan import RunSpec

    cases = []
    for spec in ("linux/amd64", "linux/arm64"):
        art = artifacts[f"sandbox {spec}"]
        for img in ("scratch", "distroless-static"):
            cases.append((_cell(spec, img, "baseline", ("stdin",)), art, RunSpec(("stdin",), stdin="in\0put\n")))
            cases.append((_cell(spec, img, "baseline", ("stdin",)), art, RunSpec(("stdin",))))
            cases += [(_cell(spec, img, "baseline", ("tmp",)), art, RunSpec(("tmp",)))] * 2
            cases.append((_cell(spec, img, "baseline", ("etc",)), art, RunSpec(("etc",))))
            cases += [(_cell(spec, img, "baseline", ("shm",)), art, RunSpec(("shm",)))] * 2
    res = _parity(engines, cases)
    outs = [ed.stdout for _, el, ed in res]
    assert outs[0] == 'stdin 7 "in\\x00put\\n" err=<nil>\n' and outs[1] == 'stdin 0 "" err=<nil>\n'
    assert outs[2] == outs[3] == "tmp unwritable\n"            # scratch has no /tmp
    assert outs[9] == outs[10] == "tmp fresh\n"                # distroless-static: a fresh one each cell
    assert outs[5] == outs[6] == "shm fresh\n"
    assert "127.0.1.1\\txarch" in outs[4] and "cwd / uid 0" in outs[4]


def test_a_pooled_container_that_died_is_replaced(client, artifacts):
    from xarch.engines.docker import DockerEngine
    from xarch.plan import Expect, RunSpec

    run = RunSpec(("hello",), expect=Expect(0, "^probe hello$"))
    cell = _cell("linux/arm64", "alpine", "baseline", ("hello",))
    with DockerEngine("pool") as e:
        assert _run(e, cell, artifacts["plain linux/arm64"], run)[0].ok
        (pooled,) = client.containers.list(filters={"label": f"xarch.run={e.run_id}"})
        pooled.kill()
        v, ev = _run(e, cell, artifacts["plain linux/arm64"], run)
        assert v.ok and ev.extra["docker_mode"] == "pool", (v, ev.infra)
    assert DockerEngine().mode == "pool"


def test_retry_of_a_transient_daemon_failure_is_recorded(docker_daemon, artifacts, monkeypatch):
    import requests
    from docker.models.containers import ContainerCollection

    from xarch.engines.docker import DockerEngine
    from xarch.plan import Expect, RunSpec

    real = ContainerCollection.create
    calls = {"n": 0}

    def flaky(self: Any, *a: Any, **kw: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            resp = requests.Response()
            resp.status_code = 500
            raise docker.errors.APIError("injected", response=resp, explanation="injected transient failure")
        return real(self, *a, **kw)

    monkeypatch.setattr(ContainerCollection, "create", flaky)
    run = RunSpec(("hello",), expect=Expect(0, "^probe hello$"))
    for mode in ("container", "pool"):
        calls["n"] = 0
        with DockerEngine(mode) as e:
            v, ev = _run(e, _cell("linux/arm64", "scratch", "baseline", ("hello",)), artifacts["plain linux/arm64"], run)
        assert v.verdict == "ok", (mode, v, ev.infra)
        assert ev.extra["docker_retries"] == "1" and calls["n"] == 2, (mode, ev.extra)


def test_a_non_transient_failure_is_not_retried(docker_daemon, artifacts, monkeypatch):
    import requests
    from docker.models.containers import ContainerCollection

    from xarch.engines.docker import DockerEngine
    from xarch.plan import RunSpec

    calls = {"n": 0}

    def broken(self: Any, *a: Any, **kw: Any) -> Any:
        calls["n"] += 1
        resp = requests.Response()
        resp.status_code = 400
        raise docker.errors.APIError("bad", response=resp, explanation="invalid mount config")

    monkeypatch.setattr(ContainerCollection, "create", broken)
    with DockerEngine("container") as e:
        v, ev = _run(e, _cell("linux/arm64", "scratch", "baseline", ("hello",)), artifacts["plain linux/arm64"],
                     RunSpec(("hello",)))
    assert v.verdict == "infra-error" and "invalid mount config" in v.explanation
    assert calls["n"] == 1 and "docker_retries" not in ev.extra


def test_unreachable_daemon_is_an_infra_error_naming_the_start_command():
    import gc
    import warnings

    from xarch.engines.docker import DockerEngine
    from xarch.errors import InfraError

    # docker-py leaves the socket of a failed unix connect to the GC; that is not ours to fix
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        bad = docker.DockerClient(base_url="unix:///nonexistent/docker.sock", version="1.41")
        with DockerEngine(client=bad) as e:
            try:
                e.preflight(())
                raise AssertionError("preflight passed without a daemon")
            except InfraError as err:
                what, fix = err.what, err.fix
        bad.close()
        del e, bad
        gc.collect()
    assert "not reachable" in what
    assert "sudo systemctl start docker" in fix and "sudo dockerd &" in fix


_DRIVER = """
import sys
from pathlib import Path
from xarch.engines.docker import DockerEngine
from xarch.plan import Cell, Profile, RunSpec, Target
with DockerEngine(sys.argv[1]) as e:
    c = Cell(Target("linux/amd64", "linux", "amd64", None), "scratch", Profile("baseline", builtin=True),
             "qemu64", ("sleep",), {})
    e.run_cell(c, Path(sys.argv[2]), e.empty_root, RunSpec(("sleep",), timeout=300))
"""


@pytest.mark.parametrize("mode", ["container", "pool"])
def test_the_next_engine_removes_what_a_killed_run_left(client, artifacts, tmp_path, mode):
    from xarch.engines.docker import DockerEngine

    script = tmp_path / "driver.py"
    script.write_text(_DRIVER)
    p = subprocess.Popen([sys.executable, str(script), mode, str(artifacts["plain linux/amd64"])], cwd=ROOT)
    prefix = None
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pidns = os.readlink("/proc/self/ns/pid")
            prefix = f"{socket.gethostname()}|{pidns}|{p.pid}|"
            running = [c for c in _mine(client, prefix) if c["State"] == "running"]
            if running and (mode == "container" or client.api.top(running[0]["Id"])["Processes"][1:]):
                break
            assert p.poll() is None, "the driver exited early"
            time.sleep(0.2)
        else:
            pytest.fail("the driver never started its cell")
        time.sleep(0.5)
    finally:
        p.kill()            # SIGKILL: no __exit__, the container stays
        p.wait()
    assert prefix is not None and _mine(client, prefix), "the killed run left nothing to clean up"
    with DockerEngine() as e:
        assert e.removed_leftovers >= 1
    assert _mine(client, prefix) == []
    assert list(Path("/tmp").glob(f"xarch-docker-{p.pid}-*")) == []


def test_cli_engine_docker_matches_local(docker_daemon, xrun_matrix):
    body = """
        name: probe
        targets: [linux/arm64, linux/arm/v7, linux/amd64]
        profiles: [baseline, pi-zero, host]
        images: [scratch, alpine]
        run: {args: [hello], expect: {stdout: "^probe hello$"}}
    """
    r = xrun_matrix(body, "--engine", "docker")
    if r.rc == 3 and not r.report:
        # not wired yet, or the CLI's own preflight refused: say which
        pytest.skip(f"xrun --engine docker did not run: {r.err.strip()[-300:]}")
    local = xrun_matrix(body)
    assert {c["id"]: c["verdict"] for c in r.report["cells"]} == \
        {c["id"]: c["verdict"] for c in local.report["cells"]}
    assert r.rc == local.rc


def test_parallel_run_stage_gives_the_same_verdicts(engines, artifacts, tmp_path, probe_src):
    """The pipeline's run stage at -j2 (several pooled containers per image and arch at once)."""
    from xarch import matrix
    from xarch.pipeline import RootfsProvider, build_all, run_cells

    m = tmp_path / "matrix.yaml"
    m.write_text(f"name: probe\nproject: {probe_src}\n"
                 f"build: {{output: \"{tmp_path}/{{{{ target | replace('/', '-') }}}}\"}}\n"
                 "targets: [linux/arm64, linux/arm/v7, linux/amd64]\nimages: [scratch, alpine]\n"
                 "profiles: [baseline, pi-zero, pi3, host]\n"
                 "run: {args: [hello], timeout: 120, expect: {stdout: \"^probe hello$\"}}\n")
    plan = matrix.load(m)
    builds = build_all(plan, jobs=2)
    got = {}
    for e in engines:
        res = run_cells(plan, e, builds, 2, RootfsProvider(e.empty_root))
        got[e.name] = {r.cell.id: r.verdict.verdict for r in res}
    assert got["docker"] == got["local"]
    assert sorted(set(got["local"].values())) == ["ok", "unsupported-cpu"]


@pytest.mark.parametrize("mode", ["container", "pool"])
def test_ctrl_c_ends_a_running_cell_at_once(docker_daemon, artifacts, mode):
    """proc.stop() (what Ctrl-C calls) must not leave the run stage waiting for run.timeout."""
    import threading

    from xarch import proc
    from xarch.engines.docker import DockerEngine
    from xarch.plan import RunSpec

    cell = _cell("linux/amd64", "scratch", "baseline", ("sleep",))
    raised: list[BaseException] = []
    with DockerEngine(mode) as e:
        def run() -> None:
            try:
                _run(e, cell, artifacts["plain linux/amd64"], RunSpec(("sleep",), timeout=300))
            except BaseException as exc:
                raised.append(exc)
        t = threading.Thread(target=run)
        t.start()
        time.sleep(3)
        t0 = time.monotonic()
        proc.stop()
        try:
            t.join(timeout=30)
        finally:
            proc.reset()
        assert not t.is_alive() and time.monotonic() - t0 < 5
    assert len(raised) == 1 and isinstance(raised[0], proc.Stopped), raised
