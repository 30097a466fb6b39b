"""Issue 14 end to end: processes a cell starts run under the cell's emulator and CPU model.

The local engine gives each cell private binfmt_misc handlers (engines/children.py), so children need
nothing from the host; with those off (XARCH_CHILDREN=host) and in the docker engine, children go
through the host's handlers when there are any, and fail with a verdict naming the child otherwise.
The host-handler cases register one handler of their own (as root) and remove exactly it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from filelock import FileLock

from conftest import FIXTURES, run_xrun

pytestmark = pytest.mark.e2e

BINFMT = Path("/proc/sys/fs/binfmt_misc")
TEST_HANDLER = "xarch-test-aarch64"


def _matrix(targets: str, args: str, stdout: str, profiles: str = "[baseline]", project: Path | None = None) -> str:
    return f"""
        name: children
        project: {project or FIXTURES / 'children'}
        targets: {targets}
        images: [alpine]
        profiles: {profiles}
        run: {{args: {args}, expect: {{stdout: "{stdout}"}}}}
    """


def _children(cell: dict) -> str:
    return (cell.get("evidence") or {}).get("children") or ""


def test_a_shell_child_runs_in_alpine_on_arm64_and_armv7(xrun_matrix):
    r = xrun_matrix(_matrix("[linux/arm64, linux/arm/v7]", "[sh]", "^hi from sh"))
    for cid, model in (("linux/arm64:alpine:baseline", "cortex-a53"), ("linux/arm/v7:alpine:baseline", "cortex-a7")):
        c = r.cell(cid)
        assert c["verdict"] == "ok", c
        assert _children(c).startswith("private binfmt_misc") and f"QEMU_CPU={model}" in _children(c), c


def test_a_program_that_re_executes_itself_runs(xrun_matrix):
    r = xrun_matrix(_matrix("[linux/arm64, linux/riscv64]", "[reexec]", "^hi from child"))
    for cid in ("linux/arm64:alpine:baseline", "linux/riscv64:alpine:baseline"):
        assert r.cell(cid)["verdict"] == "ok", r.cell(cid)


def _with_child(tmp_path: Path, go: Path, env: dict[str, str]) -> Path:
    """A copy of the children fixture whose embedded child.bin is ./child built with `env`."""
    proj = tmp_path / "children"
    shutil.copytree(FIXTURES / "children", proj)
    (proj / "child.bin").unlink()
    subprocess.run([str(go), "build", "-trimpath", "-o", "child.bin", "./child"], cwd=proj, check=True,
                   env={**os.environ, "CGO_ENABLED": "0", "GOOS": "linux", **env}, capture_output=True, timeout=600)
    return proj


def test_a_goarm7_child_of_a_goarm6_parent_on_a_pi_zero_is_unsupported_cpu(xrun_matrix, tmp_path, go_bin):
    proj = _with_child(tmp_path, go_bin, {"GOARCH": "arm", "GOARM": "7"})
    r = xrun_matrix(_matrix("[linux/arm/v6]", "[embedded]", "^hi from child", "[pi-zero, pi3]", proj))
    c = r.cell("linux/arm/v6:alpine:pi-zero")
    assert c["verdict"] == "unsupported-cpu", c
    assert c["explanation"].startswith("a child process died of SIGILL"), c["explanation"]
    assert "QEMU_CPU=arm1176" in c["explanation"] and "GOARM=6" in c["fix"]
    # the same parent and child on a Pi 3 (Cortex-A53 runs ARMv7 code): the child runs
    assert r.cell("linux/arm/v6:alpine:pi3")["verdict"] == "ok", r.cell("linux/arm/v6:alpine:pi3")


def test_a_v3_child_of_a_v1_parent_on_a_v2_vm_is_unsupported_cpu(xrun_matrix, tmp_path, go_bin):
    """On an amd64 host a child of the host's arch would run natively: a false green on x86-64-v2-vm."""
    proj = _with_child(tmp_path, go_bin, {"GOARCH": "amd64", "GOAMD64": "v3"})
    r = xrun_matrix(_matrix("[linux/amd64]", "[embedded]", "^hi from child", "[x86-64-v2-vm]", proj))
    c = r.cell("linux/amd64:alpine:x86-64-v2-vm")
    assert c["verdict"] == "unsupported-cpu", c
    assert c["explanation"].startswith("a child process refused to start"), c["explanation"]
    assert "built for v3" in c["explanation"] and "GOAMD64=v2" in c["fix"], c


def test_xrun_exec_runs_children_under_the_same_model(tmp_path, go_bin):
    proj = _with_child(tmp_path, go_bin, {"GOARCH": "arm", "GOARM": "7"})
    out = tmp_path / "parent"
    subprocess.run([str(go_bin), "build", "-trimpath", "-o", str(out), "."], cwd=proj, check=True, timeout=600,
                   env={**os.environ, "GOOS": "linux", "GOARCH": "arm", "GOARM": "6", "CGO_ENABLED": "0"},
                   capture_output=True)
    p = run_xrun(["exec", "--image", "alpine", "--profile", "pi2", str(out), "sh"])
    assert p.returncode == 0 and p.stdout == "hi from sh\n", p.stderr
    p = run_xrun(["exec", "--image", "alpine", "--profile", "pi2", str(out), "embedded"])
    assert p.returncode == 0 and p.stdout == "hi from child\n", p.stderr
    p = run_xrun(["exec", "--image", "alpine", "--profile", "pi-zero", str(out), "embedded"])
    assert p.returncode == 1 and "uncaught target signal 4" in p.stderr, p.stderr


# -- the host's handlers -----------------------------------------------------------------------------

@pytest.fixture
def host_binfmt(tmp_path_factory) -> Iterator[contextlib.AbstractContextManager]:
    """Serializes the tests that change the host's handlers (xdist workers share the kernel), and
    yields a context manager that registers an aarch64 handler of its own for the duration."""
    if os.geteuid() != 0:
        pytest.skip("registering a host binfmt_misc handler needs root")
    conf = Path("/usr/lib/binfmt.d/qemu-aarch64.conf")
    if not conf.is_file():
        pytest.skip("qemu-user-static's binfmt.d entries are missing (`apt-get install qemu-user-static`)")
    lock = FileLock(str(tmp_path_factory.getbasetemp().parent / "host-binfmt.lock"))
    mounted = False
    with lock:
        if not (BINFMT / "register").exists():
            subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], check=True)
            mounted = True
        try:
            if any(n.startswith("qemu-aarch64") or n == "aarch64" for n in os.listdir(BINFMT)):
                pytest.skip("this host already has an aarch64 handler: the no-handler case cannot be shown")

            @contextlib.contextmanager
            def registered() -> Iterator[None]:
                line = conf.read_text().strip().split(":", 2)[2]
                (BINFMT / "register").write_text(f":{TEST_HANDLER}:{line}")
                try:
                    yield
                finally:
                    (BINFMT / TEST_HANDLER).write_text("-1")

            yield registered
        finally:
            if (BINFMT / TEST_HANDLER).exists():
                (BINFMT / TEST_HANDLER).write_text("-1")
            if mounted:
                subprocess.run(["umount", str(BINFMT)], check=False)


def _without_then_with(xrun_matrix, host_binfmt, *extra: str, env: dict[str, str]):
    m = _matrix("[linux/arm64]", "[sh]", "^hi from sh")
    without = xrun_matrix(m, *extra, env=env).cell("linux/arm64:alpine:baseline")
    with host_binfmt():
        with_ = xrun_matrix(m, *extra, env=env).cell("linux/arm64:alpine:baseline")
    return without, with_


def _assert_no_handler_verdict(c: dict) -> None:
    assert c["verdict"] == "exec-format-error", c
    assert c["explanation"].startswith("a child process, /bin/sh, could not be executed"), c["explanation"]
    assert "exec format error" in c["explanation"] and "binfmt_misc handler" in c["explanation"]
    assert "qemu-user-static binfmt-support" in c["fix"] and "update-binfmts --enable qemu-aarch64" in c["fix"]


def test_without_private_handlers_children_use_the_hosts_or_get_the_exact_fix(xrun_matrix, host_binfmt):
    without, with_ = _without_then_with(xrun_matrix, host_binfmt, env={"XARCH_CHILDREN": "host"})
    _assert_no_handler_verdict(without)
    assert with_["verdict"] == "ok", with_
    assert _children(with_).startswith(f"host binfmt_misc handler {TEST_HANDLER} (flags "), with_
    assert "QEMU_CPU=cortex-a53" in _children(with_)


@pytest.mark.parametrize("mode", ["pool", "container"])
def test_docker_children_use_the_hosts_handlers_or_get_the_exact_fix(docker_daemon, xrun_matrix, host_binfmt, mode):
    without, with_ = _without_then_with(xrun_matrix, host_binfmt, "--engine", "docker",
                                        env={"XARCH_DOCKER_MODE": mode})
    _assert_no_handler_verdict(without)
    assert with_["verdict"] == "ok", with_
    assert TEST_HANDLER in _children(with_) and "QEMU_CPU=cortex-a53" in _children(with_)
