"""The command line as a user meets it: exit codes, messages without tracebacks, Ctrl-C, caching."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import ROOT, run_xrun

pytestmark = pytest.mark.e2e


def test_bad_matrix_exits_2_with_file_line_key_and_no_traceback(tmp_path):
    m = tmp_path / "matrix.yaml"
    m.write_text("name: app\ntargets:\n  - linux/arm/v9\n")
    p = run_xrun([str(m)])
    assert p.returncode == 2
    assert f"{m}:3: targets[0]: unknown variant 'v9' for arm" in p.stderr
    assert "Traceback" not in p.stderr + p.stdout


def test_bad_command_line_exits_2(tmp_path):
    p = run_xrun(["run", "matrix.yaml", "--only", "arch=arm"])
    assert p.returncode == 2 and "KEY=GLOB" in p.stderr and "Traceback" not in p.stderr
    p = run_xrun(["run", "matrix.yaml", "--shard", "4/3"])
    assert p.returncode == 2 and "I must be between 1 and N" in p.stderr


def test_missing_matrix_exits_2(tmp_path):
    p = run_xrun([str(tmp_path / "none.yaml")])
    assert p.returncode == 2 and "none.yaml: no such file" in p.stderr


def test_missing_emulator_exits_3_naming_the_package(tmp_path, probe_src):
    m = tmp_path / "matrix.yaml"
    m.write_text(f"name: probe\nproject: {probe_src}\nbuild: {{output: '{tmp_path}/{{{{ arch }}}}'}}\n"
                 "targets: [linux/arm64]\n")
    # a PATH with bwrap but without qemu-aarch64-static: absence simulated, nothing uninstalled
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("bwrap", "true"):
        src = subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip()
        (bindir / tool).symlink_to(src)
    p = run_xrun([str(m)], env={"PATH": str(bindir)})
    assert p.returncode == 3, p.stdout + p.stderr
    assert "qemu-aarch64-static" in p.stderr and "apt-get install qemu-user-static" in p.stderr
    assert "Traceback" not in p.stderr


def test_list_prints_the_plan_without_building(tmp_path):
    p = run_xrun(["matrix.yaml", "--list"])
    assert p.returncode == 0
    assert "cell  linux/arm:scratch:pi-zero  cpu=arm1176  xfail=unsupported-cpu" in p.stdout
    assert "build linux/arm/v6 -> dist/greet-linux-arm-v6" in p.stdout


def test_warm_rerun_builds_nothing(xrun_matrix):
    body = """
        name: probe
        targets: [linux/arm64, linux/arm/v6]
        run: {args: [hello]}
    """
    first = xrun_matrix(body)
    assert first.rc == 0
    again = xrun_matrix(body)
    assert again.rc == 0
    assert [b["cached"] for b in again.report["builds"]] == [True, True]


def test_only_selects_cells(xrun_matrix):
    r = xrun_matrix("""
        name: probe
        targets: [linux/arm64, linux/arm/v6]
        profiles: [baseline, pi-zero]
        run: {args: [hello]}
    """, "--only", "profile=pi-*")
    assert [c["id"] for c in r.report["cells"]] == ["linux/arm/v6:scratch:pi-zero"]
    assert [b["target"] for b in r.report["builds"]] == ["linux/arm/v6"]


def test_only_target_glob_matches_per_segment_and_says_what_it_took(tmp_path):
    """`linux/arm*` (the README's example) is arm with any variant, never arm64; a glob that takes
    nothing is exit 2 naming the matrix's targets. --list: nothing is built."""
    p = run_xrun(["matrix.yaml", "--list", "--only", "target=linux/arm*"])
    assert p.returncode == 0, p.stderr
    cells = [ln.split()[1] for ln in p.stdout.splitlines() if ln.startswith("cell ")]
    assert cells == ["linux/arm/v6:scratch:baseline", "linux/arm/v6:scratch:pi-zero", "linux/arm:scratch:baseline",
                     "linux/arm:scratch:pi-zero"]
    assert f"--only target=linux/arm*: 4 cells: {', '.join(cells)}" in p.stdout
    p = run_xrun(["matrix.yaml", "--list", "--only", "target=linux/arm64*"])
    assert [ln.split()[1] for ln in p.stdout.splitlines() if ln.startswith("cell ")] == ["linux/arm64:scratch:baseline"]
    p = run_xrun(["matrix.yaml", "--list", "--only", "target=linux/arm64", "--only", "target=linux/amd64*",
                  "--only", "profile=baseline"])     # one key's globs: alternatives; keys: all
    assert [ln.split()[1] for ln in p.stdout.splitlines() if ln.startswith("cell ")] == [
        "linux/amd64:scratch:baseline", "linux/amd64/v3:scratch:baseline", "linux/arm64:scratch:baseline"]
    p = run_xrun(["matrix.yaml", "--list", "--only", "target=linux/mips*"])
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "--only target=linux/mips* matches no cell; the matrix's targets: linux/amd64, linux/amd64/v3" in p.stderr


def test_a_grid_wider_than_a_ci_log_becomes_one_line_per_cell_never_cut(xrun_matrix):
    """Output to a pipe is 120 columns: rich would cut cells ('scratch:basel…', 'unsupported-c…')."""
    long = "a-profile-name-long-enough-to-push-the-grid-of-this-matrix-well-past-a-ci-log"
    r = xrun_matrix(f"""
        name: probe
        targets: [linux/arm64, linux/amd64/v3]
        profiles: [baseline, x86-64-v2-vm, graviton2, {{name: {long}, cpu: {{arm64: cortex-a53}}}}]
        run: {{args: [hello]}}
    """, env={"COLUMNS": ""})      # as in CI: no COLUMNS, not a terminal
    assert r.rc == 1, r.out + r.err
    assert "…" not in r.out, r.out
    assert "cells (one per line: the grid is wider than 120 columns)" in r.out
    lines = [" ".join(ln.split()) for ln in r.out.splitlines()]
    assert f"linux/arm64 scratch:{long} ok cortex-a53" in lines
    assert "linux/amd64/v3 scratch:x86-64-v2-vm unsupported-cpu ✗ Nehalem" in lines
    assert all(len(ln) <= 120 for ln in r.out.splitlines() if "scratch:" in ln and "✗" not in ln)


def test_help_lists_every_command_with_its_line():
    from xarch.cli import parser

    p = run_xrun(["--help"])
    assert p.returncode == 0
    sub = next(a for a in parser()._actions if a.choices and "exec" in a.choices)
    helps = {c.dest: c.help for c in sub._choices_actions}
    assert set(helps) == set(sub.choices) >= {"run", "images", "doctor", "explain", "exec", "profile", "report", "gha"}
    flat = " ".join(p.stdout.split())
    for name, line in helps.items():
        assert f"{name} {' '.join(line.split())}" in flat, name


def test_ctrl_c_cleans_up_exits_130_and_keeps_partial_results(tmp_path, probe_src):
    marker = f"xarch-marker-{uuid.uuid4().hex}"
    m = tmp_path / "matrix.yaml"
    m.write_text(f"name: probe\nproject: {probe_src}\nbuild: {{output: '{tmp_path}/{{{{ arch }}}}'}}\n"
                 f"targets: [linux/amd64]\nprofiles: [baseline, host]\nrun: {{args: [sleepfork, {marker}]}}\n")
    rep = tmp_path / "r.json"
    tmpdir = tmp_path / "tmp"      # xrun's temp roots go here, so leftovers are visible
    tmpdir.mkdir()
    p = subprocess.Popen([sys.executable, "-m", "xarch", str(m), "--json", str(rep), "-j", "2"],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "TMPDIR": str(tmpdir)})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not _procs_with(marker):
        time.sleep(0.2)
    assert _procs_with(marker), "the cells never started"
    p.send_signal(signal.SIGINT)
    try:
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:        # a hung xrun must not outlive the test (nor its sandboxes)
            p.kill()
            p.communicate()
            for pid in _procs_with(marker):
                os.kill(int(pid), signal.SIGKILL)
    assert p.returncode == 130, out + err
    assert "interrupted" in err
    time.sleep(0.5)
    assert _procs_with(marker) == []
    r = json.loads(rep.read_text())
    assert r["interrupted"] is True
    assert [b["verdict"] for b in r["builds"]] == ["ok"]
    # contract §7: the cells that did not finish are named (both were still running)
    done = {c["id"] for c in r["cells"]}
    assert sorted(r["summary"]["interrupted"]) == sorted(
        {"linux/amd64:scratch:baseline", "linux/amd64:scratch:host"} - done)
    assert r["summary"]["interrupted"]
    assert list(tmpdir.iterdir()) == []


def test_the_next_run_removes_what_a_killed_run_left_in_tmp(tmp_path, probe_src):
    """kill -9 leaves xrun's scratch dirs; the next run removes those whose owner is gone."""
    m = tmp_path / "matrix.yaml"
    m.write_text(f"name: probe\nproject: {probe_src}\nbuild: {{output: '{tmp_path}/{{{{ arch }}}}'}}\n"
                 "targets: [linux/amd64]\nprofiles: [host]\nrun: {args: [sleep, '60']}\n")
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    p = subprocess.Popen([sys.executable, "-m", "xarch", str(m)], cwd=ROOT, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(tmpdir.glob("xarch-local-*")):
        time.sleep(0.2)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    left = list(tmpdir.glob("xarch-local-*"))
    assert left, "the killed run made no scratch dir"
    m.write_text(m.read_text().replace("[sleep, '60']", "[hello]"))
    r = subprocess.run([sys.executable, "-m", "xarch", str(m)], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode in (0, 1), r.stderr
    assert [d for d in left if d.exists()] == []


def _procs_with(marker: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(pid)
            except OSError:
                pass
    return found


def test_from_goreleaser_runs_the_release_artifacts_without_building(tmp_path, go_bin):
    import shutil

    if shutil.which("wine") is None:
        pytest.skip("the release has a windows/amd64 binary, which runs under wine: apt-get install wine wine64")

    from conftest import FIXTURES, build_goreleaser_binaries

    arts = tmp_path / "proj" / "dist" / "artifacts.json"
    arts.parent.mkdir(parents=True)
    shutil.copy(FIXTURES / "goreleaser" / "artifacts.json", arts)
    build_goreleaser_binaries(arts, go_bin)
    m = tmp_path / "matrix.yaml"
    m.write_text("name: greet\nrun: {args: [--version], expect: {stdout: '^greet 1.0.0'}}\n")
    rep = tmp_path / "r.json"
    p = run_xrun([str(m), "--from-goreleaser", str(arts), "--json", str(rep)])
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    assert "skipped from" in p.stderr and "loong64" in p.stderr
    r = json.loads(rep.read_text())
    assert all(b["verdict"] == "ok" and b["log"].startswith("prebuilt:") for b in r["builds"])
    ids = {c["id"]: c["verdict"] for c in r["cells"]}
    assert ids["linux/arm/v6:scratch:baseline"] == "ok" and ids["windows/amd64:none:none"] == "ok"  # wine
    assert ids["darwin/arm64:none:none"] == "not-runnable"
    assert sum(v == "ok" for v in ids.values()) >= 8


def test_output_piped_into_head_ends_quietly_not_with_a_traceback():
    """`xrun profile show ... | true`: the reader is gone before xrun writes; xrun exits 141 like a shell
    would, with no traceback."""
    p = subprocess.run(f"{sys.executable} -m xarch profile show xeon-skylake-sp | true; echo \"rc=${{PIPESTATUS[0]}}\"",
                       shell=True, executable="/bin/bash", cwd=ROOT, text=True, capture_output=True, timeout=120)
    assert "Traceback" not in p.stderr and "BrokenPipeError" not in p.stderr, p.stderr
    assert p.stdout.strip() == "rc=141", (p.stdout, p.stderr)
