"""Images are really built from the host's Debian mirror, cached once, verified, and rebuilt when damaged."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xarch.errors import ImageUnavailable
from xarch.platforms import DEBIAN_ARCHES as ARCH_INFO
from xarch.rootfs.apt_sources import host_apt_sources, host_suite
from xarch.rootfs.owners import owners_of
from xarch.rootfs.store import ImageStore

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
REAL_APT_GET = shutil.which("apt-get")
REAL_APT_CACHE = shutil.which("apt-cache")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ImageStore:
    """One cache for the module, so each image/arch is built once per worker."""
    return ImageStore(tmp_path_factory.mktemp("image-cache"))


def _shim(bin_dir: Path, counter: Path, *, fail: bool = False) -> dict[str, str]:
    """A PATH whose apt-get/apt-cache log each call, then run the real one (or fail, as if absent)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for tool, real in (("apt-get", REAL_APT_GET), ("apt-cache", REAL_APT_CACHE)):
        tail = "echo 'E: apt is not usable here' >&2; exit 100" if fail else f'exec {real} "$@"'
        script = bin_dir / tool
        script.write_text(f'#!/bin/sh\necho "{tool} $*" >> {counter}\n{tail}\n')
        script.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def _calls(counter: Path, word: str) -> int:
    if not counter.exists():
        return 0
    return sum(1 for line in counter.read_text().splitlines() if word in line.split())


def _builds(cache: Path) -> list[dict[str, object]]:
    log = cache / "builds.log"
    return [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []


def _manifest(rootfs: Path) -> dict[str, object]:
    data = json.loads((rootfs.parent / "manifest.json").read_text())
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize("arch", ["arm64", "armel"])
def test_alpine_has_the_musl_loader_and_busybox_but_no_glibc(store: ImageStore, arch: str) -> None:
    root = store.ensure("alpine", arch)
    loader = root / "lib" / f"ld-musl-{ARCH_INFO[arch].musl_arch}.so.1"
    assert loader.exists(), sorted(os.listdir(root / "lib"))
    assert loader.resolve().read_bytes()[:4] == b"\x7fELF"
    assert (root / "bin/busybox").read_bytes()[:4] == b"\x7fELF"
    assert os.readlink(root / "bin/sh") == "busybox"
    for applet in ("ls", "cat", "echo"):
        assert os.readlink(root / "bin" / applet) == "busybox"
    assert (root / "usr/bin/env").exists()
    assert not list(root.rglob("libc.so.6")) and not list(root.rglob("ld-linux*"))
    assert stat.S_IMODE((root / "tmp").stat().st_mode) == 0o1777
    assert "root:x:0:0" in (root / "etc/passwd").read_text()
    assert "nobody" in (root / "etc/group").read_text()
    assert "alpine-like" in (root / "etc/os-release").read_text()
    m = _manifest(root)
    assert [p["name"] for p in m["packages"]] == ["musl", "busybox-static", "ca-certificates"]  # type: ignore[index,union-attr]
    assert m["exact"] is False and m["arch"] == arch


@pytest.mark.parametrize("arch", ["arm64", "armel"])
def test_distroless_static_has_certs_zones_and_nonroot(store: ImageStore, arch: str) -> None:
    root = store.ensure("distroless-static", arch)
    bundle = (root / "etc/ssl/certs/ca-certificates.crt").read_text()
    assert bundle.count("-----BEGIN CERTIFICATE-----") > 50
    assert (root / "usr/share/zoneinfo/Europe/Berlin").read_bytes()[:4] == b"TZif"
    assert "nonroot:x:65532:65532:" in (root / "etc/passwd").read_text()
    assert "nonroot:x:65532:" in (root / "etc/group").read_text()
    assert stat.S_IMODE((root / "tmp").stat().st_mode) == 0o1777
    assert stat.S_IMODE((root / "home/nonroot").stat().st_mode) == 0o700
    # recorded for the docker engine's layer, not applied: the cache's files are its builder's
    assert owners_of(root) == {"home/nonroot": (65532, 65532)}
    assert (root / "home/nonroot").stat().st_uid == os.geteuid()
    assert (root / "etc/services").is_file()
    assert "VERSION_ID=" in (root / "etc/os-release").read_text()
    # no shell and no libc
    assert not (root / "bin/sh").exists() and not (root / "bin/busybox").exists()
    assert not list(root.rglob("libc.so*")) and not list(root.rglob("ld-*.so*"))


def test_list_reports_rebuilt_equivalents(store: ImageStore) -> None:
    store.ensure("alpine", "arm64")
    found = {(c.name, c.arch): c for c in store.list()}
    c = found["alpine", "arm64"]
    assert c.exact is False and c.fidelity.startswith("rebuilt equivalent:")
    assert c.size > 1_000_000 and c.manifest.is_file() and c.rootfs.is_dir()


def test_warm_ensure_is_fast_and_needs_no_apt(store: ImageStore, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    built = store.ensure("alpine", "arm64")
    counter = tmp_path / "calls"
    monkeypatch.setenv("PATH", _shim(tmp_path / "bin", counter, fail=True)["PATH"])
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        assert store.ensure("alpine", "arm64") == built
        times.append(time.perf_counter() - t0)
    assert min(times) < 0.05, times
    assert not counter.exists()  # offline with a cache: apt is never run
    assert store.path("alpine", "arm64") == built


def test_scratch_is_an_empty_dir_without_apt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counter = tmp_path / "calls"
    monkeypatch.setenv("PATH", _shim(tmp_path / "bin", counter, fail=True)["PATH"])
    root = ImageStore(tmp_path / "cache").ensure("scratch", "armel")
    assert root.is_dir() and list(root.iterdir()) == []
    assert not counter.exists()


def test_two_processes_build_once(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    counter = tmp_path / "calls"
    env = _shim(tmp_path / "bin", counter)
    code = ("import sys; from pathlib import Path; from xarch.rootfs.store import ImageStore; "
            "print(ImageStore(Path(sys.argv[1])).ensure('alpine', 'arm64'))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(cache)], cwd=ROOT, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert outs[0][0] == outs[1][0] and outs[0][0].strip().endswith("/rootfs")
    assert _calls(counter, "update") == 1, counter.read_text()
    assert _calls(counter, "download") == 1, counter.read_text()
    assert len(_builds(cache)) == 1

    # the downloaded .debs are a cache of their own: prune frees them, the image stays
    store = ImageStore(cache)
    stale = cache / "rootfs" / "alpine-arm64-000000000000"
    (stale / "rootfs").mkdir(parents=True)
    (stale / "rootfs" / "junk").write_bytes(b"x" * 1000)
    freed = store.prune()
    assert freed > 1000 and not stale.exists()
    assert store.path("alpine", "arm64") is not None
    assert store.prune(all_entries=True) > 1_000_000
    assert store.list() == [] and store.path("alpine", "arm64") is None


def test_damaged_entry_is_rebuilt_never_used(store: ImageStore) -> None:
    root = store.ensure("alpine", "arm64")
    before = len(_builds(store.cache_dir))
    (root / "usr/bin/busybox").unlink()
    assert store.path("alpine", "arm64") is None
    again = store.ensure("alpine", "arm64")
    assert (again / "bin/busybox").is_file()
    assert len(_builds(store.cache_dir)) == before + 1

    # same size, other content: the changed mtime makes the quick check hash it (issue 11: the
    # size-only check served a poisoned /etc/passwd)
    passwd = again / "etc/passwd"
    st = passwd.stat()
    data = bytearray(passwd.read_bytes())
    data[0] ^= 1
    passwd.chmod(0o644)
    passwd.write_bytes(bytes(data))
    assert store.path("alpine", "arm64") is None
    fixed = store.ensure("alpine", "arm64")
    assert (fixed / "etc/passwd").read_text().startswith("root:")
    assert len(_builds(store.cache_dir)) == before + 2

    # the same change with its mtime put back: only a full verification notices
    passwd = fixed / "etc/passwd"
    st = passwd.stat()
    passwd.chmod(0o644)
    passwd.write_bytes(bytes(data))
    os.utime(passwd, ns=(st.st_atime_ns, st.st_mtime_ns))
    passwd.chmod(st.st_mode & 0o7777)
    assert store.path("alpine", "arm64") is not None
    assert store.path("alpine", "arm64", verify="full") is None
    fixed = store.ensure("alpine", "arm64", verify="full")
    assert (fixed / "etc/passwd").read_text().startswith("root:")
    assert len(_builds(store.cache_dir)) == before + 3


def test_riscv64_comes_from_a_suite_that_has_it_or_says_why(store: ImageStore) -> None:
    try:
        root = store.ensure("distroless-static", "riscv64")
    except ImageUnavailable as e:
        assert "riscv64" in str(e) and "distroless-static" in str(e)
        return
    suite = _manifest(root)["suite"]
    host = host_suite(host_apt_sources())
    assert isinstance(suite, str) and suite
    # the host suite is used whenever its archive carries the arch (bookworm has no riscv64)
    assert suite in {host, "trixie", "forky"}
    assert "riscv64" in str(root)
    assert (root / "etc/ssl/certs/ca-certificates.crt").stat().st_size > 0


def test_offline_without_cache_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An unreachable proxy is how a machine without mirror access looks to apt.
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    store = ImageStore(tmp_path / "cache")
    store.apt_attempts = 1
    with pytest.raises(ImageUnavailable) as ei:
        store.ensure("alpine", "arm64")
    msg = str(ei.value)
    assert "alpine for arm64" in msg and "xrun images build alpine --arch arm64" in msg
    assert store.path("alpine", "arm64") is None
