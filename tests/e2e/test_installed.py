"""xarch installed as users install it (a wheel, as action.yml's `pip install` does), run from elsewhere.

The wheel must carry everything the package reads at run time: the image definitions (images/*.yaml,
shipped as package data), the HTML template. The run happens outside the checkout, with a Python
that cannot import the checkout's `runner/`, on a matrix that uses alpine and distroless-static.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel built from this checkout (dependencies from the current venv's
    site-packages, so no download is needed beyond what setup already fetched)."""
    from filelock import FileLock

    base = tmp_path_factory.mktemp("installed")
    # one wheel for every xdist worker: two setuptools builds in one source tree race on its build/
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent      # this run's directory, above the workers' own
    wheels = shared / "xarch-wheel"
    with FileLock(str(shared / "xarch-wheel.lock")):
        if not list(wheels.glob("xarch-*.whl")):
            # the way a user's pip builds it: an isolated build with the pyproject's own build requirements
            r = subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(wheels), str(ROOT)],
                               capture_output=True, text=True, timeout=600)
            assert r.returncode == 0, r.stderr
    [wheel] = wheels.glob("xarch-*.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    # the dependencies come from this venv (on the path via a .pth): only xarch itself is installed
    site = next((venv / "lib").glob("python3*/site-packages"))
    deps = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (site / "xarch-test-deps.pth").write_text("\n".join(deps) + "\n")
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--no-deps", "-q", str(wheel)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return venv


def test_the_wheel_ships_the_image_definitions(installed: Path, tmp_path: Path) -> None:
    py = installed / "bin" / "python"
    r = subprocess.run([str(py), "-c", "import xarch, xarch.rootfs as i; print(xarch.__file__); "
                        "print(sorted(i.load_definitions()))"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120, env={**os.environ, "PYTHONPATH": ""})
    assert r.returncode == 0, r.stderr
    where, names = r.stdout.splitlines()
    assert str(installed) in where and str(ROOT) not in where, where     # not the checkout
    for n in ("alpine", "distroless-static", "scratch"):
        assert n in names
    r = subprocess.run([str(py), "-c", "import runner"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120, env={**os.environ, "PYTHONPATH": ""})
    assert r.returncode != 0 and "No module named 'runner'" in r.stderr, r.stderr


def test_pytest_in_a_project_with_its_own_runner_package(installed: Path, tmp_path: Path) -> None:
    """xarch's pytest11 entry point loads in every project of the environment: it must not collide."""
    (tmp_path / "runner").mkdir()
    (tmp_path / "runner" / "__init__.py").write_text("")
    (tmp_path / "test_x.py").write_text("import runner\n\ndef test_x():\n    assert runner\n")
    r = subprocess.run([str(installed / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": ""})
    assert r.returncode == 0 and "1 passed" in r.stdout, r.stdout + r.stderr


def test_an_installed_xrun_runs_alpine_and_distroless_from_outside_the_checkout(installed: Path,
                                                                                   tmp_path: Path) -> None:
    proj = tmp_path / "app"
    proj.mkdir()
    src = (ROOT / "examples" / "greet")
    for f in src.iterdir():
        if f.is_file():
            (proj / f.name).write_bytes(f.read_bytes())
    m = tmp_path / "matrix.yaml"
    m.write_text(textwrap.dedent("""
        name: greet
        project: app
        targets: [linux/amd64, linux/arm64]
        images: [alpine, distroless-static]
        profiles: [baseline]
        run:
          args: ["--version"]
          expect: {exit: 0, stdout: "^greet 1\\\\.0\\\\.0 linux/"}
    """))
    env = {**os.environ, "PYTHONPATH": "", "COLUMNS": "200"}
    r = subprocess.run([str(installed / "bin" / "xrun"), str(m), "--json", str(tmp_path / "r.json")],
                       cwd=tmp_path, capture_output=True, text=True, timeout=1200, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "4 cells: 4 ok" in r.stdout, r.stdout


def test_an_installed_launcher_builds_from_the_wheel_and_runs_cached_launches(installed: Path, tmp_path: Path,
                                                                               probe_arm64: Path) -> None:
    """`xrun exec --launcher` compiles the Go source the wheel ships, and hands Python the installed xrun."""
    probe = probe_arm64
    env = {**os.environ, "PYTHONPATH": "", "XARCH_CACHE_DIR": str(tmp_path / "cache")}
    r = subprocess.run([str(installed / "bin" / "xrun"), "exec", "--launcher", "--profile", "pi4"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr
    cmd = r.stdout.split()
    assert json.loads(Path(f"{cmd[0]}.json").read_text())["xrun"] == [str(installed / "bin" / "xrun")]
    for word, debug in (("first", ""), ("second", "1")):
        p = subprocess.run([*cmd, str(probe), "print", word], cwd=tmp_path, capture_output=True, text=True,
                           timeout=600, env={**env, "XARCH_LAUNCHER_DEBUG": debug})
        assert (p.returncode, p.stdout) == (0, f"{word}\n"), p.stderr
    assert "to xrun exec" not in p.stderr, p.stderr         # the second run: the launcher's own
