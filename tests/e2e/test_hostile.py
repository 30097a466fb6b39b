"""A hostile binary cannot leave its cell, harm the host, or forge the console (issue 11).

tests/fixtures/hostile tries every escape the security review found (remounting its read-only binds,
writing its artifact, the image cache and the emulator, host sysctls, new namespaces, ptrace,
device nodes, re-executing itself natively first), a fork bomb, a memory hog, an output flood and
terminal escape sequences. Run as root these are the real attacks: uid 0 in a cell is host uid 0.
Each engine (local; docker pool and container mode) must stop all of them and say which limit held.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from conftest import FIXTURES

pytestmark = pytest.mark.e2e

HOSTILE = FIXTURES / "hostile"
ENGINES = [("local", None), ("docker", "pool"), ("docker", "container")]
ESCAPES = ("remount-root", "remount-app", "remount-proc", "write-app", "chmod-app", "write-passwd",
           "write-lib", "write-qemu", "sysctl", "unshare-user", "ptrace-init", "mknod")


def _engine_args(engine: str, mode: str | None, request: pytest.FixtureRequest) -> tuple[list[str], dict[str, str]]:
    if engine == "docker":
        request.getfixturevalue("docker_daemon")
        return ["--engine", "docker"], {"XARCH_DOCKER_MODE": mode or "pool"}
    return [], {}


def _hostile(xrun_matrix, run: str, profiles: str, *args: str, env: dict[str, str] | None = None):
    """Run the hostile fixture for linux/amd64 in scratch with this `run:` mapping."""
    return xrun_matrix(f"name: hostile\nproject: {HOSTILE}\ntargets: [linux/amd64]\nimages: [scratch]\n"
                       f"profiles: {profiles}\nrun: {run}\n", *args, env=env)


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _guarded_files() -> dict[str, str]:
    """What a cell must never change: the emulator and every cached image's /etc/passwd."""
    from xarch import paths

    files = {p: _digest(Path(p)) for p in [shutil.which("qemu-x86_64-static") or ""] if p}
    root = paths.cache_dir()
    for passwd in root.glob("images/**/etc/passwd"):
        if passwd.is_file() and not passwd.is_symlink():
            files[str(passwd)] = _digest(passwd)
    return files


@pytest.mark.parametrize(("engine", "mode"), ENGINES, ids=["local", "docker-pool", "docker-container"])
def test_a_root_cell_cannot_escape(xrun_matrix, request, tmp_path, engine, mode):
    """Every escape is refused under qemu and natively, also after re-executing itself natively."""
    if os.geteuid() != 0:
        pytest.skip("the escapes matter (and are tested) as root: uid 0 in the cell is then host uid 0")
    args, env = _engine_args(engine, mode, request)
    body = f"""
        name: hostile
        project: {HOSTILE}
        targets: [linux/amd64]
        images: [scratch, alpine]
        profiles: [baseline, host]
        run: {{args: ["native"], timeout: 120, expect: {{exit: 0}}}}
    """
    # the first run builds (and may make the alpine image); record what must not change, attack again
    r = xrun_matrix(body, *args, env=env)
    artifact = Path(r.build("linux/amd64")["artifact"])
    before = {**_guarded_files(), str(artifact): _digest(artifact)}
    r = xrun_matrix(body, *args, env=env)
    assert r.rc == 0, r.out + r.err
    for cell in r.report["cells"]:
        out = cell["stdout"]
        assert cell["verdict"] == "ok", (cell["id"], cell["explanation"], out)
        assert ", 0 escapes" in out, out
        for name in ESCAPES:
            assert f"{name}: blocked" in out, (cell["id"], name, out)
        assert cell["evidence"]["hardening"], cell["evidence"]
    if engine == "local":       # the qemu cells really re-executed natively (the emulator was not busy)
        assert "running natively" in r.cell("linux/amd64:alpine:baseline")["stdout"]
    after = {**_guarded_files(), str(artifact): _digest(artifact)}
    assert {k: v for k, v in after.items() if k in before} == before


@pytest.mark.parametrize(("engine", "mode"), ENGINES, ids=["local", "docker-pool", "docker-container"])
@pytest.mark.parametrize(("args", "limits", "says", "key"), [
    (["forkbomb"], "{pids: 64}", "limit of 64 processes and threads", "pids"),
    (["memhog", "3000"], "{memory: 256m}", "ran out of memory at its 256 MiB limit", "memory"),
    (["flood", "100000"], "{output: 1m}", "passed the output limit 1 MiB", "output"),
], ids=["fork-bomb", "memory-hog", "output-flood"])
def test_resource_limits_end_as_verdicts(xrun_matrix, request, engine, mode, args, limits, says, key):
    """A fork bomb, a memory hog and an output flood each end as `crashed` naming the limit that held."""
    eargs, env = _engine_args(engine, mode, request)
    r = _hostile(xrun_matrix, f"{{args: {args!r}, timeout: 20, limits: {limits}, expect: {{exit: 0}}}}",
                 "[baseline, host]", *eargs, env=env)
    assert r.rc == 1, r.out + r.err
    for cell in r.report["cells"]:
        assert cell["verdict"] == "crashed", (cell["id"], cell["explanation"])
        assert says in cell["explanation"], cell["explanation"]
        assert f"raise run.limits.{key}" in cell["fix"], cell["fix"]
        lim = cell["evidence"]["limits"]
        assert lim and lim["mechanism"], cell["evidence"]


def test_rlimit_fallback_holds_memory_without_cgroups(xrun_matrix):
    """Where no cgroup can be made, RLIMIT_DATA bounds memory and the verdict says it was the rlimit."""
    r = _hostile(xrun_matrix, '{args: [memhog, "3000"], timeout: 60, limits: {memory: 256m}, expect: {exit: 0}}',
                 "[baseline, host]", env={"XARCH_LIMITS": "rlimit"})
    assert r.rc == 1, r.out + r.err
    for cell in r.report["cells"]:
        assert cell["evidence"]["limits"]["mechanism"] == "rlimit"
        if cell["verdict"] == "timeout" and cell["profile"] != "host":
            # qemu-user whose mmaps fail under RLIMIT_DATA may keep searching the guest address space
            # (about one run in four, on the old code as well): the README says so; the limit still held
            continue
        assert cell["verdict"] == "crashed", cell
        assert "256 MiB limit (run.limits.memory, enforced by RLIMIT_DATA)" in cell["explanation"], cell
    host = next(c for c in r.report["cells"] if c["profile"] == "host")
    assert host["verdict"] == "crashed", host      # natively the rlimit always ends it as a crash


def test_expect_stdout_sees_the_whole_output(xrun_matrix):
    """`^BEGIN` matches a first line that is far more than 64 KiB before the end."""
    r = _hostile(xrun_matrix, '{args: [long, "20000"], timeout: 60, expect: {exit: 0, stdout: "^BEGIN\\nline 0 "}}',
                 "[host]")
    assert r.rc == 0, r.out + r.err
    cell = r.cell("linux/amd64:scratch:host")
    assert cell["verdict"] == "ok"
    # the report keeps a bounded tail, and says how much it left out
    assert len(cell["stdout"]) < 100_000
    assert cell["stdout"].startswith("[...]")


def test_a_failure_reported_on_stdout_is_quoted(xrun_matrix):
    r = _hostile(xrun_matrix, "{args: [stdoutfail], timeout: 60, expect: {exit: 0}}", "[host]")
    cell = r.cell("linux/amd64:scratch:host")
    assert cell["verdict"] == "exit-status"
    assert "stdout: 'error: config file /etc/app.toml not found'" in cell["explanation"], cell["explanation"]


def test_escape_sequences_and_markup_from_a_cell_reach_the_console_inert(xrun_matrix):
    """A cell's output cannot erase lines, colour a forged 'ok', set the title, link, or inject markup."""
    r = _hostile(xrun_matrix, "{args: [ansi], timeout: 60, expect: {exit: 0}}", "[host]")
    assert r.rc == 1, r.err
    console = r.out + r.err
    assert "\x1b" not in console and "\x07" not in console, repr(console[-2000:])
    assert "Traceback" not in console
    # the text is still there, visibly escaped, and the markup is shown literally
    assert "\\x1b]0;pwned title" in console, console[-2000:]
    assert "[bold red]markup[/]" in console, console[-2000:]
