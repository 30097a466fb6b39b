"""`xrun doctor` against the real machine: the real emulators, sandbox, kernel binfmt_misc and daemon."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT
from xarch import cli, doctor, platforms

pytestmark = pytest.mark.e2e


def test_local_engine_essentials_are_real_and_tested_versions() -> None:
    checks = {c.name: c for c in doctor.run_checks(engine="local")}
    for a in platforms.ARCHES.values():
        if a.qemu:
            c = checks[f"qemu-{a.qemu}-static"]
            assert c.ok, c
            m = re.search(r"qemu (\d+)\.(\d+)", c.detail)
            assert m and (int(m[1]), int(m[2])) >= doctor.QEMU_TESTED, c.detail
    for name in ("bubblewrap", "user namespaces", "go"):
        assert checks[name].ok and checks[name].needed, checks[name]
    assert cli.main(["doctor", str(ROOT / "matrix.yaml")]) == 0


def test_docker_daemon_version() -> None:
    exe = shutil.which("docker")
    try:        # a hung daemon (docker 20.10 can deadlock in a kill) must not hang the suite
        reachable = exe is not None and subprocess.run([exe, "info"], capture_output=True, check=False,
                                                       timeout=30).returncode == 0
    except subprocess.TimeoutExpired:
        reachable = False
    if not reachable:
        pytest.skip("no reachable docker daemon here (docker info failed or took over 30 s)")
    c = {c.name: c for c in doctor.run_checks(arches=[], engine="docker")}["docker"]
    assert c.ok and c.needed and re.match(r"engine \d+\.\d+", c.detail), c


@contextlib.contextmanager
def mounted_binfmt() -> Iterator[Path]:
    """The kernel's binfmt_misc, mounted for the test if it was not (and unmounted after)."""
    d = doctor.BINFMT_DIR
    mounted_here = False
    if not (d / "register").exists():
        r = subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(d)], capture_output=True,
                           check=False)
        if r.returncode != 0:
            pytest.skip(f"cannot mount binfmt_misc: {r.stderr.decode().strip()}")
        mounted_here = True
    try:
        yield d
    finally:
        if mounted_here:
            subprocess.run(["umount", str(d)], check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="registering a binfmt handler needs root")
def test_real_kernel_entries_parse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Register a throwaway handler (its magic matches no real file) and read it back as the kernel prints it."""
    real_qemu = shutil.which("qemu-aarch64-static")
    assert real_qemu, "qemu-user-static is installed by scripts/setup"
    tag = f"xarchtest{os.getpid()}"
    fake = dataclasses.replace(platforms.ARCHES["arm64"], goarch=tag, qemu=tag)
    monkeypatch.setattr(platforms, "ARCHES", {**platforms.ARCHES, tag: fake})
    monkeypatch.setattr(platforms, "host_goarch", lambda: "amd64-or-whatever")
    with mounted_binfmt() as d:
        entry = d / f"qemu-{tag}"

        def register(flags: str) -> None:
            (d / "register").write_text(f":qemu-{tag}:M::XARCHDOCTOR{tag}::{real_qemu}:{flags}")

        def check() -> doctor.Check:
            checks = doctor.run_checks(arches=[tag], needs=("binfmt",), binfmt_dir=d)
            return {c.name: c for c in checks}[f"binfmt qemu-{tag}"]

        try:
            register("F")
            c = check()
            assert c.ok and c.needed, c
            assert c.detail.startswith(f"enabled, flags F, interpreter {real_qemu}")
            assert re.search(r"qemu \d+\.\d+", c.detail)
            entry.write_text("0")
            c = check()
            assert not c.ok and "the handler is disabled" in c.detail and c.fix == f"echo 1 | sudo tee {entry}"
            entry.write_text("-1")
            register("")
            c = check()
            assert not c.ok and "no F flag" in c.detail and c.detail.startswith("enabled, flags (none)")
        finally:
            if entry.exists():
                entry.write_text("-1")
