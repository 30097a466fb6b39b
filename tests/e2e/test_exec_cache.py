"""`xrun exec`'s cached launch (engines/execplan.py): the engine's own command line, read back by a
run that loads nothing else, and made again when a file it names changes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

HEAVY = ("xarch.model", "xarch.plan", "xarch.artifact", "xarch.classify", "elftools", "rich", "jinja2",
         "dataclasses")


@pytest.mark.parametrize("image", ["scratch", "distroless-static:nonroot"])
def test_cached_launch_is_the_engines_own_command_line(probe_arm64: Path, tmp_path: Path, image: str) -> None:
    from xarch import execwrap
    from xarch.engines import execplan
    from xarch.engines.launch import Prepared
    from xarch.engines.local import LocalEngine
    from xarch.execview import cell_env, view_for

    args = ["print", "x"]
    cell, run = execwrap._cell(str(probe_arm64), probe_arm64, image, "pi4", args, {}, None)
    env = cell_env({"TERM": "xterm", "MY_FLAG": "1", "SSH_AUTH_SOCK": "/s"}, ["EXTRA=2"], False)
    (tmp_path / "scratch").mkdir()
    view = view_for(tmp_path, args, env, tmp_path / "scratch")
    with LocalEngine(state=tmp_path / "state") as engine:
        root = execwrap._root(engine, cell)
        made = engine.exec_plan(cell, probe_arm64, root, run)
        assert isinstance(made, tuple), made
        plan, stamped = made
        prep = engine.prepare(cell, probe_arm64, root, replace(run, env=env), workdir=tmp_path, binds=view.binds)
        assert isinstance(prep, Prepared), prep
        try:
            fd = prep.fds[0] if prep.fds else None
            assert execplan.argv_of(plan, str(probe_arm64), args, str(tmp_path), view.binds, env, fd) == prep.argv
        finally:
            prep.close()
    assert str(root) in stamped and any("qemu-aarch64" in s for s in stamped)
    view.close()


_RUN = """
import json, sys
from xarch import cli
rc = cli.main(["exec", "--profile", "pi4", *sys.argv[1:]])
sys.stdout.flush()
print("RC", rc, "HEAVY", json.dumps([m for m in {heavy!r} if m in sys.modules]))
"""


def _run(binary: Path, cache: Path, *args: str) -> tuple[str, int, list[str]]:
    p = subprocess.run([sys.executable, "-c", _RUN.format(heavy=HEAVY), str(binary), *args], text=True,
                       capture_output=True, timeout=300, env={**os.environ, "XARCH_CACHE_DIR": str(cache)},
                       cwd=cache.parent)
    said, _, tail = p.stdout.rpartition("RC ")
    rc, _, heavy = tail.partition(" HEAVY ")
    assert p.returncode == 0, p.stderr
    return said, int(rc), json.loads(heavy)


def test_a_passing_run_loads_only_the_launch_and_a_changed_file_remakes_the_plan(probe_arm64: Path,
                                                                                 tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    said, rc, heavy = _run(probe_arm64, cache, "print", "first")
    assert (said, rc) == ("first\n", 0) and "xarch.model" in heavy      # no plan yet: the engine made one
    plans = list((cache / "exec").glob("*.json"))
    assert len(plans) == 1
    said, rc, heavy = _run(probe_arm64, cache, "print", "second")
    assert (said, rc, heavy) == ("second\n", 0, [])
    # a failing run is explained by the classifier, which only then loads; its status passes through
    said, rc, heavy = _run(probe_arm64, cache, "exit", "5")
    assert rc == 5 and "xarch.classify" in heavy
    # the emulator the plan binds changed (a reinstall, an edit): the plan is not used, but made again
    plan = json.loads(plans[0].read_text())
    tagged = next(s[0] for s in plan["stamps"] if "/tagged/qemu-aarch64" in s[0])
    os.utime(tagged, ns=(1, 1))
    said, rc, heavy = _run(probe_arm64, cache, "print", "third")
    assert (said, rc) == ("third\n", 0) and "xarch.model" in heavy
    again = json.loads(plans[0].read_text())
    assert next(s for s in again["stamps"] if s[0] == tagged)[3] == 1      # st_mtime_ns as it is now
    assert _run(probe_arm64, cache, "print", "fourth")[1:] == (0, [])


def test_a_cached_run_removes_what_a_killed_one_left_in_tmp(probe_arm64: Path, tmp_path: Path) -> None:
    """go test's -timeout kills a test binary's wrapper: its scratch dir stays until the next run."""
    import tempfile

    cache = tmp_path / "cache"
    _run(probe_arm64, cache, "print", "warm")       # the plan exists: the next run is the cached one
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = Path(tempfile.gettempdir()) / f"xarch-exec-{dead.pid}-killed"
    (stale / "pkg").mkdir(parents=True)
    said, rc, heavy = _run(probe_arm64, cache, "print", "next")
    assert (said, rc, heavy) == ("next\n", 0, []) and not stale.exists()
