"""`xrun doctor` checks, each with and without its piece, on a fake PATH and a fake binfmt_misc.

Nothing here runs a real emulator, sandbox or daemon: every tool is a shell script in a temp dir,
binfmt_misc is a temp dir holding entries in the kernel's format, Go and zig are stubbed.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from xarch import cli, doctor, doctor_binfmt, matrix, platforms, toolchain
from xarch.doctor import Check, required_for_plan, run_checks
from xarch.errors import ConfigError, InfraError
from xarch.plan import Plan

QEMU_OK = 'echo "qemu-{q} version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)"\necho "Copyright (c) 2003-2022"'
SEGV = "kill -SEGV $$"
BWRAP_OK = 'case "$1" in --version) echo "bubblewrap 0.8.0";; *) exit 0;; esac'
BWRAP_DENIED = ('case "$1" in --version) echo "bubblewrap 0.8.0";; *) echo "bwrap: setting up uid map: '
                'Permission denied" >&2; exit 1;; esac')


class Bin:
    """A directory of fake executables, used as the whole PATH."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "bin"
        self.dir.mkdir()

    def add(self, name: str, body: str) -> Path:
        p = self.dir / name
        p.write_text(f"#!/bin/sh\n{body}\n")
        p.chmod(0o755)
        return p

    def qemu(self, *qemus: str, body: str = QEMU_OK) -> None:
        for q in qemus:
            self.add(f"qemu-{q}-static", body.format(q=q))

    @property
    def path(self) -> str:
        return str(self.dir)


def entry(interp: str | Path, flags: str = "POF", enabled: bool = True) -> str:
    """A binfmt_misc entry exactly as the kernel prints it (Debian's qemu-aarch64)."""
    return (f"{'enabled' if enabled else 'disabled'}\ninterpreter {interp}\nflags: {flags}\noffset 0\n"
            "magic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n")


@pytest.fixture
def fakebin(tmp_path: Path) -> Bin:
    return Bin(tmp_path)


@pytest.fixture
def binfmt(tmp_path: Path) -> Path:
    d = tmp_path / "binfmt_misc"
    d.mkdir()
    (d / "status").write_text("enabled\n")
    (d / "register").write_text("")
    return d


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No real Go, zig, sysctl, binfmt or image cache; an amd64 host whatever runs the tests."""
    monkeypatch.setattr(toolchain, "go_bin_dir", lambda: "/opt/go/bin")
    monkeypatch.setattr(toolchain, "go_version", lambda: "go1.27.3")
    monkeypatch.setattr(doctor, "ZIG_ARGV", ("/nonexistent/zig-version",))
    monkeypatch.setattr(doctor, "PROC_SYS", tmp_path / "proc-sys")
    monkeypatch.setattr(doctor_binfmt, "BINFMT_D", tmp_path / "binfmt.d")
    monkeypatch.setattr(doctor, "BINFMT_DIR", tmp_path / "no-binfmt")
    monkeypatch.setattr(platforms, "host_goarch", lambda: "amd64")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def by_name(checks: Iterable[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def one(name: str, **kw: Any) -> Check:
    kw.setdefault("binfmt_dir", Path("/nonexistent"))
    return by_name(run_checks(**kw))[name]


# -- qemu-user -------------------------------------------------------------------------------------

def test_qemu_present_prints_its_version(fakebin: Bin) -> None:
    fakebin.qemu("aarch64")
    c = one("qemu-aarch64-static", arches=["arm64"], path=fakebin.path)
    assert c.ok and c.needed and c.fix is None and c.status == "ok"
    assert c.detail == f"{fakebin.dir}/qemu-aarch64-static: qemu 7.2.22"


def test_qemu_missing_is_needed_with_the_install_command(fakebin: Bin) -> None:
    c = one("qemu-aarch64-static", arches=["arm64"], path=fakebin.path)
    assert not c.ok and c.needed and c.status == "FAIL"
    assert c.detail == "not found on PATH" and c.fix == "sudo apt-get install qemu-user-static"


def test_qemu_older_than_tested_is_a_warning(fakebin: Bin) -> None:
    fakebin.qemu("arm", body='echo "qemu-arm version 6.2.0 (Debian 1:6.2+dfsg-2ubuntu6)"')
    c = one("qemu-arm-static", arches=["arm"], path=fakebin.path)
    assert c.ok and c.status == "warn"
    assert "qemu 6.2.0" in c.detail and "older than tested (7.2)" in c.detail
    assert c.fix is not None and "qemu-user-static" in c.fix


def test_qemu_that_segfaults_names_the_2025_breakage_and_the_pin(fakebin: Bin) -> None:
    fakebin.qemu("aarch64", body=SEGV)
    c = one("qemu-aarch64-static", arches=["arm64"], path=fakebin.path)
    assert not c.ok and c.needed
    assert "killed by SIGSEGV" in c.detail and "tonistiigi/binfmt#215/#240" in c.detail
    assert c.fix is not None and "sudo apt-get install qemu-user-static" in c.fix
    assert f"{doctor.BINFMT_IMAGE} --install arm64" in c.fix


def test_non_pie_qemu_before_the_fix_is_flagged(fakebin: Bin, monkeypatch: pytest.MonkeyPatch) -> None:
    fakebin.qemu("aarch64", body='echo "qemu-aarch64 version 8.1.5"')
    monkeypatch.setattr(doctor, "_is_non_pie", lambda path: True)
    c = one("qemu-aarch64-static", arches=["arm64"], path=fakebin.path)
    assert c.ok and c.status == "warn" and "non-PIE build older than qemu 9.2.2" in c.detail


def test_is_non_pie_reads_the_elf_type(tmp_path: Path) -> None:
    hdr = bytearray(b"\x7fELF\x02\x01\x01" + bytes(9))
    exe, dyn = tmp_path / "exec", tmp_path / "dyn"
    exe.write_bytes(bytes(hdr) + (2).to_bytes(2, "little") + bytes(46))
    dyn.write_bytes(bytes(hdr) + (3).to_bytes(2, "little") + bytes(46))
    assert doctor._is_non_pie(str(exe)) and not doctor._is_non_pie(str(dyn))
    assert not doctor._is_non_pie(str(tmp_path / "missing"))


def test_arches_none_means_every_emulated_arch(fakebin: Bin) -> None:
    names = {c.name for c in run_checks(path=fakebin.path, binfmt_dir=Path("/nonexistent"))}
    assert {f"qemu-{a.qemu}-static" for a in platforms.ARCHES.values() if a.qemu} <= names
    assert not any("wasm" in n for n in names)


# -- binfmt_misc -----------------------------------------------------------------------------------

def test_binfmt_not_mounted_gives_the_mount_command(fakebin: Bin, tmp_path: Path) -> None:
    fakebin.qemu("aarch64")
    checks = by_name(run_checks(arches=["arm64"], needs=("binfmt",), path=fakebin.path,
                                binfmt_dir=tmp_path / "empty"))
    c = checks["binfmt_misc"]
    assert not c.ok and c.needed
    assert c.fix == f"sudo mount -t binfmt_misc binfmt_misc {tmp_path / 'empty'}"
    assert "binfmt qemu-aarch64" not in checks   # nothing more to say about entries


def test_binfmt_not_needed_says_what_its_absence_costs(fakebin: Bin, tmp_path: Path) -> None:
    from xarch.engines import children

    fakebin.qemu("aarch64")
    c = by_name(run_checks(arches=["arm64"], engine="local", path=fakebin.path, binfmt_dir=tmp_path / "empty"))[
        "binfmt_misc"]
    assert not c.ok and not c.needed and c.status == "absent"
    assert "xrun starts qemu itself" in c.detail and "see child processes" in c.detail
    if children.private_off() is None:
        assert "the local engine does not need it" in c.detail
    else:
        assert "fails with 'exec format error'" in c.detail


def test_binfmt_switched_off_globally(fakebin: Bin, binfmt: Path) -> None:
    (binfmt / "status").write_text("disabled\n")
    c = one("binfmt_misc", arches=["arm64"], needs=("binfmt",), path=fakebin.path, binfmt_dir=binfmt)
    assert not c.ok and c.fix == f"echo 1 | sudo tee {binfmt}/status"


def test_handler_ok_is_the_qemu_on_path(fakebin: Bin, binfmt: Path) -> None:
    fakebin.qemu("aarch64")
    (binfmt / "qemu-aarch64").write_text(entry(fakebin.dir / "qemu-aarch64-static"))
    c = one("binfmt qemu-aarch64", arches=["arm64"], needs=("binfmt",), path=fakebin.path, binfmt_dir=binfmt)
    assert c.ok and c.needed and c.fix is None, c
    assert c.detail == (f"enabled, flags POF, interpreter {fakebin.dir}/qemu-aarch64-static (the qemu on PATH), "
                        "qemu 7.2.22")


def test_handler_through_a_symlink_shows_the_real_file(fakebin: Bin, binfmt: Path, tmp_path: Path) -> None:
    fakebin.qemu("aarch64")
    link = tmp_path / "aarch64-binfmt-P"
    link.symlink_to(fakebin.dir / "qemu-aarch64-static")
    (binfmt / "qemu-aarch64").write_text(entry(link))
    c = one("binfmt qemu-aarch64", arches=["arm64"], needs=("binfmt",), path=fakebin.path, binfmt_dir=binfmt)
    assert c.ok and f"interpreter {link} -> {fakebin.dir}/qemu-aarch64-static (the qemu on PATH)" in c.detail


def test_handler_missing_registers_from_the_distro_conf_or_tonistiigi(fakebin: Bin, binfmt: Path,
                                                                     tmp_path: Path) -> None:
    fakebin.qemu("aarch64")
    c = one("binfmt qemu-aarch64", arches=["arm64"], needs=("binfmt",), path=fakebin.path, binfmt_dir=binfmt)
    assert not c.ok and c.needed and c.detail.startswith("no handler registered")
    assert c.fix == f"docker run --privileged --rm {doctor.BINFMT_IMAGE} --install arm64"
    conf = tmp_path / "binfmt.d"
    conf.mkdir()
    (conf / "qemu-aarch64.conf").write_text(":qemu-aarch64:M::\\x7fELF:\\xff:/usr/libexec/qemu-binfmt/"
                                            "aarch64-binfmt-P:OPF\n")
    c = one("binfmt qemu-aarch64", arches=["arm64"], needs=("binfmt",), path=fakebin.path, binfmt_dir=binfmt)
    assert c.fix == f"sudo sh -c 'cat {conf}/qemu-aarch64.conf > {binfmt}/register'"


def test_handler_without_f_flag_fails_and_says_why(fakebin: Bin, binfmt: Path) -> None:
    fakebin.qemu("aarch64")
    (binfmt / "qemu-aarch64").write_text(entry(fakebin.dir / "qemu-aarch64-static", flags="P"))
    c = one("binfmt qemu-aarch64", arches=["arm64"], needs=("binfmt",), path=fakebin.path, binfmt_dir=binfmt)
    assert not c.ok and c.needed
    assert "no F flag" in c.detail and "inside each container" in c.detail
    assert c.fix is not None and c.fix.startswith(f"echo -1 | sudo tee {binfmt}/qemu-aarch64 && ")


def test_handler_disabled(fakebin: Bin, binfmt: Path) -> None:
    fakebin.qemu("aarch64")
    (binfmt / "qemu-aarch64").write_text(entry(fakebin.dir / "qemu-aarch64-static", enabled=False))
    c = one("binfmt qemu-aarch64", arches=["arm64"], needs=("binfmt",), path=fakebin.path, binfmt_dir=binfmt)
    assert not c.ok and c.detail.startswith("disabled,") and "the handler is disabled" in c.detail
    assert c.fix == f"echo 1 | sudo tee {binfmt}/qemu-aarch64"


def test_handler_interpreter_that_segfaults(fakebin: Bin, binfmt: Path, tmp_path: Path) -> None:
    fakebin.qemu("aarch64")           # the PATH qemu is fine; the registered one is another build
    bad = tmp_path / "binfmt-qemu-aarch64"
    bad.write_text(f"#!/bin/sh\n{SEGV}\n")
    bad.chmod(0o755)
    (binfmt / "qemu-aarch64").write_text(entry(bad, flags="CF"))
    c = one("binfmt qemu-aarch64", arches=["arm64"], needs=("binfmt",), path=fakebin.path, binfmt_dir=binfmt)
    assert not c.ok and c.needed
    assert "killed by SIGSEGV" in c.detail and "2025 breakage" in c.detail
    assert "not the qemu on PATH" in c.detail and "(qemu 7.2.22)" in c.detail
    assert c.fix is not None and doctor.BINFMT_IMAGE in c.fix and "--uninstall qemu-aarch64" in c.fix


def test_handler_interpreter_gone(fakebin: Bin, binfmt: Path, tmp_path: Path) -> None:
    fakebin.qemu("aarch64")
    (binfmt / "qemu-aarch64").write_text(entry(tmp_path / "gone", flags="P"))
    c = one("binfmt qemu-aarch64", arches=["arm64"], needs=("binfmt",), path=fakebin.path, binfmt_dir=binfmt)
    assert not c.ok and "the interpreter does not exist" in c.detail
    # with F the kernel keeps the file it opened at registration: works, but worth re-registering
    (binfmt / "qemu-aarch64").write_text(entry(tmp_path / "gone", flags="F"))
    c = one("binfmt qemu-aarch64", arches=["arm64"], needs=("binfmt",), path=fakebin.path, binfmt_dir=binfmt)
    assert c.ok and c.status == "warn" and "no longer exists" in c.detail


def test_binfmt_is_not_needed_by_the_local_engine(fakebin: Bin, binfmt: Path) -> None:
    fakebin.qemu("aarch64", "arm")
    (binfmt / "qemu-arm").write_text(entry(fakebin.dir / "qemu-arm-static", flags="P"))
    checks = by_name(run_checks(arches=["arm64", "arm"], engine="local", path=fakebin.path, binfmt_dir=binfmt))
    assert checks["binfmt_misc"].ok and not checks["binfmt_misc"].needed
    # a broken registered handler keeps its row (not needed); unregistered ones collapse into one
    assert not checks["binfmt qemu-arm"].ok and checks["binfmt qemu-arm"].status == "absent"
    summary = checks["binfmt handlers"]
    assert summary.status == "absent" and "qemu-aarch64" in summary.detail and "qemu-arm," not in summary.detail
    assert "binfmt qemu-aarch64" not in checks


def test_host_arch_needs_no_handler(fakebin: Bin, binfmt: Path) -> None:
    fakebin.qemu("x86_64", "i386")
    checks = by_name(run_checks(arches=["amd64", "386"], engine="docker", path=fakebin.path, binfmt_dir=binfmt))
    assert checks["qemu-x86_64-static"].ok
    assert not any(n.startswith("binfmt qemu-") for n in checks)
    assert not checks["binfmt_misc"].needed    # nothing foreign to hand to the kernel


# -- sandbox ----------------------------------------------------------------------------------------

def test_bwrap_and_user_namespaces_ok(fakebin: Bin) -> None:
    fakebin.add("bwrap", BWRAP_OK)
    checks = by_name(run_checks(arches=[], path=fakebin.path, binfmt_dir=Path("/x")))
    assert checks["bubblewrap"].ok and checks["bubblewrap"].detail.endswith("bubblewrap 0.8.0")
    assert checks["user namespaces"].ok and checks["user namespaces"].needed


def test_bwrap_missing(fakebin: Bin) -> None:
    checks = by_name(run_checks(arches=[], path=fakebin.path, binfmt_dir=Path("/x")))
    assert not checks["bubblewrap"].ok and checks["bubblewrap"].needed
    assert checks["bubblewrap"].fix == "install bubblewrap: `sudo apt-get install bubblewrap`"
    assert not checks["user namespaces"].ok and "neither bwrap nor unshare" in checks["user namespaces"].detail


def test_user_namespaces_fall_back_to_unshare(fakebin: Bin) -> None:
    fakebin.add("unshare", '[ "$1" = -Ur ] && exit 0; exit 9')
    c = one("user namespaces", arches=[], path=fakebin.path)
    assert c.ok and "unshare -Ur true" in c.detail


def test_user_namespaces_denied_names_the_blocking_sysctl(fakebin: Bin, tmp_path: Path) -> None:
    fakebin.add("bwrap", BWRAP_DENIED)
    c = one("user namespaces", arches=[], path=fakebin.path)
    assert not c.ok and "Permission denied" in c.detail
    assert c.fix is not None and "kernel.unprivileged_userns_clone=1" in c.fix
    assert "kernel.apparmor_restrict_unprivileged_userns=0" in c.fix
    (tmp_path / "proc-sys" / "kernel").mkdir(parents=True)
    (tmp_path / "proc-sys" / "kernel" / "apparmor_restrict_unprivileged_userns").write_text("1\n")
    (tmp_path / "proc-sys" / "kernel" / "unprivileged_userns_clone").write_text("1\n")
    c = one("user namespaces", arches=[], path=fakebin.path)
    assert c.fix == "sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0"


def test_user_namespaces_probe_is_asked_again_after_a_failure_and_a_pass_is_remembered(
        fakebin: Bin, tmp_path: Path) -> None:
    # the first sandbox fails (as under a loaded CI machine), the second opens; every run counted
    runs = tmp_path / "runs"
    fakebin.add("bwrap", f'case "$1" in --version) echo "bubblewrap 0.8.0";; *) echo x >> {runs}; '
                f'[ -e {runs}.once ] && exit 0; : > {runs}.once; '
                'echo "bwrap: clone: Resource temporarily unavailable" >&2; exit 1;; esac')
    assert one("user namespaces", arches=[], path=fakebin.path).ok
    assert len(runs.read_text().splitlines()) == 2
    assert one("user namespaces", arches=[], path=fakebin.path).ok     # remembered: bwrap not run again
    assert len(runs.read_text().splitlines()) == 2


def test_user_namespaces_failure_is_not_remembered(fakebin: Bin, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    fakebin.add("bwrap", f'case "$1" in --version) echo "bubblewrap 0.8.0";; *) echo x >> {runs}; '
                'echo "bwrap: setting up uid map: Permission denied" >&2; exit 1;; esac')
    assert not one("user namespaces", arches=[], path=fakebin.path).ok
    assert len(runs.read_text().splitlines()) == 3      # asked three times before it counts
    assert not one("user namespaces", arches=[], path=fakebin.path).ok
    assert len(runs.read_text().splitlines()) == 6


def test_sandbox_is_not_needed_by_the_docker_engine(fakebin: Bin) -> None:
    checks = by_name(run_checks(arches=[], engine="docker", path=fakebin.path, binfmt_dir=Path("/x")))
    assert checks["bubblewrap"].status == "absent" and checks["docker"].needed


# -- docker, Go, zig, wine, node, images ----------------------------------------------------------

def test_docker_reachable(fakebin: Bin) -> None:
    fakebin.add("docker", '[ "$1" = version ] && echo "20.10.24+dfsg1 linux/amd64"')
    c = one("docker", arches=[], engine="docker", path=fakebin.path)
    assert c.ok and c.needed and c.detail == "engine 20.10.24+dfsg1 linux/amd64"


@pytest.mark.parametrize(("stderr", "fix"), [
    ("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?",
     "sudo systemctl start docker"),
    ("permission denied while trying to connect to the Docker daemon socket", "sudo usermod -aG docker $USER"),
])
def test_docker_daemon_down(fakebin: Bin, stderr: str, fix: str) -> None:
    fakebin.add("docker", f'echo "{stderr}" >&2; exit 1')
    c = one("docker", arches=[], engine="docker", path=fakebin.path)
    assert not c.ok and c.needed and "not reachable" in c.detail and c.fix is not None and c.fix.startswith(fix)


def test_docker_missing_is_not_needed_by_the_local_engine(fakebin: Bin) -> None:
    c = one("docker", arches=[], path=fakebin.path)
    assert not c.ok and not c.needed and c.status == "absent" and c.fix == "sudo apt-get install docker.io"


def test_go(fakebin: Bin, monkeypatch: pytest.MonkeyPatch) -> None:
    c = one("go", arches=[], path=fakebin.path)
    assert c.ok and c.needed and c.detail == "go1.27.3 (/opt/go/bin)"

    def no_go() -> str:
        raise InfraError("no Go toolchain found", toolchain.GO_FIX)
    monkeypatch.setattr(toolchain, "go_bin_dir", no_go)
    c = one("go", arches=[], path=fakebin.path)
    assert not c.ok and c.needed and c.detail == "no Go toolchain found" and c.fix == toolchain.GO_FIX


def test_zig(fakebin: Bin, monkeypatch: pytest.MonkeyPatch) -> None:
    zig = fakebin.add("zig-version", "echo 0.17.1")
    monkeypatch.setattr(doctor, "ZIG_ARGV", (str(zig),))
    c = one("zig", arches=[], needs={"zig"}, path=fakebin.path)
    assert c.ok and c.needed and c.detail.startswith("zig 0.17.1")
    nomod = fakebin.add("nozig", 'echo "/usr/bin/python3: No module named ziglang" >&2; exit 1')
    monkeypatch.setattr(doctor, "ZIG_ARGV", (str(nomod),))
    c = one("zig", arches=[], needs={"zig"}, path=fakebin.path)
    assert not c.ok and c.detail == "the ziglang package is not installed" and c.fix is not None
    assert c.fix.endswith("-m pip install ziglang")
    assert not one("zig", arches=[], path=fakebin.path).needed


def test_wine_or_wine64(fakebin: Bin) -> None:
    c = one("wine", arches=[], needs={"wine"}, path=fakebin.path)
    assert not c.ok and c.needed and c.fix == "sudo apt-get install wine wine64"
    fakebin.add("wine64", "echo 'wine-8.0 (Debian 8.0~repack-4)'")
    c = one("wine", arches=[], needs={"wine"}, path=fakebin.path)
    assert c.ok and c.detail == f"{fakebin.dir}/wine64: wine-8.0 (Debian 8.0~repack-4)"


def test_node(fakebin: Bin) -> None:
    c = one("node", arches=[], path=fakebin.path)
    assert not c.ok and not c.needed and c.fix == "sudo apt-get install nodejs"
    fakebin.add("node", "echo v20.19.2")
    c = one("node", arches=[], needs={"node"}, path=fakebin.path)
    assert c.ok and c.needed and c.detail.endswith("v20.19.2")


def test_image_cache_is_information_only(fakebin: Bin, tmp_path: Path) -> None:
    c = one("image cache", arches=[], path=fakebin.path)
    assert c.ok and not c.needed and c.detail == f"{tmp_path}/cache/xarch/images: 0 image(s), 0 B"
    root = tmp_path / "cache" / "xarch" / "images"
    (root / "index").mkdir(parents=True)
    (root / "rootfs" / "alpine-arm64-abc").mkdir(parents=True)
    (root / "index" / "alpine-arm64.json").write_text(json.dumps({"entry": "alpine-arm64-abc"}))
    (root / "rootfs" / "alpine-arm64-abc" / "manifest.json").write_text(json.dumps(
        {"name": "alpine", "arch": "arm64", "total_size": 3 * 1024 * 1024, "fidelity": "exact", "key": "abc"}))
    c = one("image cache", arches=[], path=fakebin.path)
    assert c.detail.endswith("1 image(s), 3.0 MiB")


# -- required_for_plan, preflight ----------------------------------------------------------------

@pytest.fixture
def plan_of(tmp_path: Path) -> Callable[[str], Plan]:
    def load(body: str) -> Plan:
        p = tmp_path / "m.yaml"
        p.write_text("name: app\n" + textwrap.dedent(body).lstrip("\n"))
        return matrix.load(p, images=["scratch", "alpine"])
    return load


def test_required_local_vs_docker(plan_of: Callable[[str], Plan]) -> None:
    plan = plan_of("targets: [linux/arm64, linux/amd64/v3, linux/arm/v6]\n")
    assert required_for_plan(plan, "local") == ({"arm64", "amd64", "arm"}, {"go", "bwrap", "userns"})
    # both engines start qemu explicitly: binfmt is never needed for a verdict
    assert required_for_plan(plan, "docker") == ({"arm64", "amd64", "arm"}, {"go", "docker"})


def test_required_same_arch_levels_need_no_binfmt(plan_of: Callable[[str], Plan]) -> None:
    plan = plan_of("targets: [linux/amd64/v2, linux/386]\n")
    assert required_for_plan(plan, "docker") == ({"amd64", "386"}, {"go", "docker"})


def test_required_host_profile_runs_natively(plan_of: Callable[[str], Plan]) -> None:
    plan = plan_of("targets: [linux/amd64]\nprofiles: [host]\n")
    assert required_for_plan(plan, "local")[0] == set()


def test_required_cc_zig(plan_of: Callable[[str], Plan]) -> None:
    plan = plan_of("targets: [{target: linux/arm64, cc: zig, env: {CGO_ENABLED: '1'}}]\n")
    assert "zig" in required_for_plan(plan, "local")[1]


def test_required_wine_and_node_for_windows_js_and_wasip1(plan_of: Callable[[str], Plan],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    plan = plan_of("targets: [windows/amd64, js/wasm, wasip1/wasm, darwin/arm64]\n")
    arches, needs = required_for_plan(plan, "local")
    # these run under wine and node, never qemu; darwin is build-checked only and needs nothing
    assert arches == set() and {"wine", "node"} <= needs
    only_darwin = plan_of("targets: [darwin/arm64]\n")
    assert not required_for_plan(only_darwin, "local")[1] & {"wine", "node"}


def test_required_unknown_engine_is_a_config_error(plan_of: Callable[[str], Plan]) -> None:
    with pytest.raises(ConfigError, match="unknown engine 'podman'"):
        required_for_plan(plan_of("targets: [linux/arm64]\n"), "podman")


def test_preflight_names_the_first_missing_piece(plan_of: Callable[[str], Plan], fakebin: Bin,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    plan = plan_of("targets: [linux/arm64]\n")
    monkeypatch.setenv("PATH", fakebin.path)
    fakebin.add("bwrap", BWRAP_OK)
    with pytest.raises(InfraError) as e:
        doctor.preflight(plan, "local")
    assert e.value.what == "qemu-aarch64-static: not found on PATH"
    assert e.value.fix == "sudo apt-get install qemu-user-static" and e.value.exit_code == 3
    fakebin.qemu("aarch64")
    doctor.preflight(plan, "local")


def test_preflight_docker_does_not_need_binfmt(plan_of: Callable[[str], Plan], fakebin: Bin, binfmt: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    plan = plan_of("targets: [linux/arm64]\n")
    monkeypatch.setenv("PATH", fakebin.path)
    monkeypatch.setattr(doctor, "BINFMT_DIR", binfmt)
    fakebin.qemu("aarch64")
    fakebin.add("docker", 'echo "27.5.1 linux/amd64"')
    (binfmt / "qemu-aarch64").write_text(entry(fakebin.dir / "qemu-aarch64-static", flags="P"))
    doctor.preflight(plan, "docker")        # a handler without F is shown by doctor, not a blocker
    (binfmt / "qemu-aarch64").unlink()
    doctor.preflight(plan, "docker")
    fakebin.add("docker", "exit 1")
    with pytest.raises(InfraError, match=r"docker"):
        doctor.preflight(plan, "docker")


# -- xrun doctor ----------------------------------------------------------------------------------

@pytest.fixture
def complete(fakebin: Bin, monkeypatch: pytest.MonkeyPatch) -> Bin:
    """A PATH with everything the local engine needs (and every emulator)."""
    fakebin.qemu(*(a.qemu for a in platforms.ARCHES.values() if a.qemu))
    fakebin.add("bwrap", BWRAP_OK)
    monkeypatch.setenv("PATH", fakebin.path)
    monkeypatch.setenv("COLUMNS", "250")   # rich would fold the fix column at 80
    return fakebin


def test_main_exit_0_when_the_local_essentials_are_there(complete: Bin, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "qemu-aarch64-static" in out and "everything the local engine needs is here" in out


def test_main_exit_3_when_something_needed_is_missing(complete: Bin, capsys: pytest.CaptureFixture[str]) -> None:
    (complete.dir / "bwrap").unlink()
    assert cli.main(["doctor"]) == 3
    out = capsys.readouterr().out
    assert "FAIL" in out and "sudo apt-get install bubblewrap" in out and "missing: bubblewrap" in out


def test_main_with_a_matrix_checks_only_what_it_needs(complete: Bin, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    (complete.dir / "qemu-s390x-static").unlink()
    m = tmp_path / "m.yaml"
    m.write_text("name: app\ntargets: [linux/arm64]\nimages: [scratch]\n")
    assert cli.main(["doctor"]) == 3                 # without a matrix every emulator counts
    assert cli.main(["doctor", str(m), "--json"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out[out.index('{\n  "engine"'):])
    assert report["ok"] is True and report["engine"] == "local" and report["matrix"] == str(m)
    names = {c["name"]: c for c in report["checks"]}
    assert names["qemu-aarch64-static"]["status"] == "ok" and "qemu-s390x-static" not in names
    assert names["docker"]["needed"] is False


def test_main_docker_engine_without_daemon_exits_3(complete: Bin, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    m = tmp_path / "m.yaml"
    m.write_text("name: app\ntargets: [linux/amd64/v2]\nimages: [scratch]\n")
    assert cli.main(["doctor", str(m), "--engine", "docker", "--json"]) == 3
    report = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in report["checks"] if c["status"] == "FAIL"] == ["docker"]


def test_main_bad_matrix_and_bad_options_are_config_errors(complete: Bin, tmp_path: Path) -> None:
    m = tmp_path / "m.yaml"
    m.write_text("name: app\ntargets: [linux/arm/v9]\n")
    with pytest.raises(ConfigError, match="unknown variant 'v9'") as e:
        cli.dispatch(["doctor", str(m)])
    assert e.value.exit_code == 2
    with pytest.raises(ConfigError, match="invalid choice"):
        cli.dispatch(["doctor", "--engine", "podman"])
