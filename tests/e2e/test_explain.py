"""`xrun explain`: facts and predictions from real binaries, checked against `go version -m` and readelf."""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conftest import FIXTURES
from xarch.cli import main
from xarch.explain import explain, render_text
from xarch.rootfs.store import ImageStore

pytestmark = pytest.mark.e2e

IMAGES = ("scratch", "alpine", "distroless-static", "distroless-base")
PROFILES = ("baseline", "pi-zero", "x86-64-v2-vm", "x86-64-v3", "host")
HOST_AMD64 = platform.machine() in ("x86_64", "amd64")


@dataclass(frozen=True)
class Spec:
    goos: str
    goarch: str
    env: dict[str, str] = field(default_factory=dict)
    flags: tuple[str, ...] = ()


ZIG_CC = f"{sys.executable} -m ziglang cc -target aarch64-linux-musl"
SPECS = {
    "static": Spec("linux", "amd64", {"CGO_ENABLED": "0"}, ("-trimpath", "-tags=netgo,osusergo")),
    "pie": Spec("linux", "amd64", {"CGO_ENABLED": "0"}, ("-buildmode=pie",)),
    "cgo-glibc": Spec("linux", "amd64", {"CGO_ENABLED": "1", "CC": "gcc"}),
    # zig links musl statically unless told -dynamic; a musl loader in PT_INTERP is the point here
    "cgo-musl": Spec("linux", "arm64", {"CGO_ENABLED": "1", "CC": ZIG_CC},
                     ("-ldflags=-linkmode=external -extldflags=-dynamic",)),
    # -ldflags only here: Go leaves it out of the build info under -trimpath
    "goarm6": Spec("linux", "arm", {"CGO_ENABLED": "0", "GOARM": "6"}, ("-ldflags=-s -w",)),
    "goarm7": Spec("linux", "arm", {"CGO_ENABLED": "0"}),          # Go's default GOARM=7
    "goamd64-v3": Spec("linux", "amd64", {"CGO_ENABLED": "0", "GOAMD64": "v3"}),
    "goamd64-v4": Spec("linux", "amd64", {"CGO_ENABLED": "0", "GOAMD64": "v4"}),
    "s390x": Spec("linux", "s390x", {"CGO_ENABLED": "0"}),
    "386": Spec("linux", "386", {"CGO_ENABLED": "0"}),
    "windows": Spec("windows", "amd64", {"CGO_ENABLED": "0"}),
    "darwin": Spec("darwin", "arm64", {"CGO_ENABLED": "0"}),
}


def _skip_reason(name: str) -> str | None:
    """Why a binary cannot be built on this machine (before trying)."""
    if name == "cgo-glibc" and not (HOST_AMD64 and shutil.which("gcc")):
        return "host cgo needs an amd64 host with gcc"
    if name == "cgo-musl" and importlib.util.find_spec("ziglang") is None:
        return "the ziglang package (zig cc, the cgo cross compiler) is not installed"
    return None


@pytest.fixture(scope="module")
def binaries(go_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | str]:
    """name -> built binary, or the reason it could not be built (the test using it then skips)."""
    work = tmp_path_factory.mktemp("explain")
    # a copy outside any VCS checkout: no vcs stamping, and no run of git on this repository
    src = work / "src"
    shutil.copytree(FIXTURES / "explain", src)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GOARM", "GOAMD64", "GO386", "CC"))}

    def build(name: str) -> Path | str:
        if (why := _skip_reason(name)) is not None:
            return why
        spec = SPECS[name]
        out = work / (name + (".exe" if spec.goos == "windows" else ""))
        env = {**base, "GOOS": spec.goos, "GOARCH": spec.goarch, **spec.env}
        p = subprocess.run([str(go_bin), "build", *spec.flags, "-o", str(out), "."], cwd=src, env=env,
                           capture_output=True, text=True, timeout=900)
        if p.returncode != 0:
            if name == "cgo-musl":
                return f"zig cc could not build the musl cgo binary: {p.stderr.strip()[-400:]}"
            raise AssertionError(f"go build of {name} failed:\n{p.stderr}")
        return out

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(SPECS, pool.map(build, SPECS), strict=True))


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> ImageStore:
    """No cached images: predictions come from the image definitions (the machine's cache is not consulted)."""
    return ImageStore(tmp_path_factory.mktemp("no-image-cache"))


@pytest.fixture
def get(binaries: dict[str, Path | str], empty_store: ImageStore) -> Iterator[Any]:
    def run(name: str) -> tuple[Path, dict[str, Any]]:
        got = binaries[name]
        if isinstance(got, str):
            pytest.skip(got)
        return got, explain(got, IMAGES, PROFILES, store=empty_store)

    yield run


def verdicts(result: dict[str, Any], axis: str) -> dict[str, str | None]:
    key = "image" if axis == "images" else "profile"
    return {p[key]: p["verdict"] for p in result[axis]}


def go_version_m(go_bin: Path, path: Path) -> tuple[str, dict[str, str]]:
    out = subprocess.run([str(go_bin), "version", "-m", str(path)], capture_output=True, text=True,
                         check=True).stdout
    version = out.splitlines()[0].rsplit(": ", 1)[1]
    settings = {}
    for line in out.splitlines():
        if line.startswith("\tbuild\t"):
            k, _, v = line[len("\tbuild\t"):].partition("=")
            settings[k] = v[1:-1] if v.startswith('"') else v
    return version, settings


def readelf(flag: str, path: Path) -> str:
    return subprocess.run(["readelf", flag, str(path)], capture_output=True, text=True, check=True).stdout


# --------------------------------------------------------------------------
# facts


@pytest.mark.parametrize("name", list(SPECS))
def test_facts_match_go_version_m_and_readelf(name: str, get: Any, go_bin: Path) -> None:
    path, r = get(name)
    spec = SPECS[name]
    version, settings = go_version_m(go_bin, path)
    go = r["go"]
    assert (r["goos"], r["goarch"]) == (spec.goos, spec.goarch) == (settings["GOOS"], settings["GOARCH"])
    assert go["version"] == version
    assert go["cgo_enabled"] == (settings["CGO_ENABLED"] == "1")
    assert go["buildmode"] == settings["-buildmode"]
    assert go["trimpath"] == (settings.get("-trimpath") == "true")
    assert go["ldflags"] == settings.get("-ldflags")
    assert go["tags"] == [t for t in settings.get("-tags", "").split(",") if t]
    assert go["vcs"] is None and "vcs" not in settings
    level_var = {"amd64": "GOAMD64", "arm": "GOARM", "arm64": "GOARM64", "386": "GO386"}.get(spec.goarch)
    if level_var is None:       # s390x: Go has no level variable for it
        assert go["level_var"] is None and go["level_value"] is None
    else:
        assert go["level_var"] == level_var and go["level_value"] == settings[level_var]
    assert go["settings"] == settings
    if spec.goos != "linux":
        assert r["format"] == ("pe" if spec.goos == "windows" else "macho") and r["header"] is None
        return
    assert r["format"] == "elf"
    m = re.search(r"\[Requesting program interpreter: ([^\]]+)\]", readelf("-lW", path))
    assert r["interp"] == (m.group(1) if m else None)
    assert r["static"] == (m is None)
    assert r["needed"] == re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", readelf("-dW", path))
    glibc = sorted({tuple(map(int, v.split("."))) for v in re.findall(r"GLIBC_([0-9.]+)", readelf("-VW", path))})
    assert r["glibc_required"] == (".".join(map(str, glibc[-1])) if glibc else None)
    isa = re.search(r"x86 ISA needed: (.*)", readelf("-nW", path))
    assert r["isa"]["x86_isa_needed"] == ([s.strip() for s in isa.group(1).split(",")] if isa else None)


def test_facts_name_the_settings_that_matter(get: Any) -> None:
    _, r = get("static")
    assert r["go"]["trimpath"] and r["go"]["tags"] == ["netgo", "osusergo"]
    _, r = get("goarm6")
    assert r["go"]["ldflags"] == "-s -w" and not r["go"]["trimpath"]
    _, r = get("pie")
    assert r["go"]["buildmode"] == "pie" and r["libc"] == "glibc" and not r["static"]
    _, r = get("goarm7")
    assert r["isa"]["level"] == "v7" and r["isa"]["how"] == "GOARM=7"
    _, r = get("goamd64-v3")
    assert r["isa"]["level"] == "v3" and r["go"]["level_value"] == "v3"
    _, r = get("cgo-glibc")
    assert r["glibc_required"] is not None
    assert r["needed"] and "libc.so.6" in r["needed"]


# --------------------------------------------------------------------------
# predictions


def test_static_runs_in_every_image(get: Any) -> None:
    _, r = get("static")
    assert set(verdicts(r, "images").values()) == {"ok"}
    assert verdicts(r, "profiles")["baseline"] == "ok" and r["profiles"][0]["cpu"] == "qemu64"


@pytest.mark.parametrize("name", ["pie", "cgo-glibc"])
def test_glibc_dynamic_needs_a_glibc_image(name: str, get: Any) -> None:
    _, r = get(name)
    v = verdicts(r, "images")
    assert v == {"scratch": "missing-loader", "alpine": "missing-loader", "distroless-static": "missing-loader",
                 "distroless-base": "ok"}
    by = {p["image"]: p for p in r["images"]}
    assert "/lib64/ld-linux-x86-64.so.2" in by["scratch"]["reason"]
    assert "glibc loader" in by["alpine"]["reason"] and "only musl" in by["alpine"]["reason"]
    assert "distroless-base" in by["scratch"]["fix"]
    assert ("-buildmode=pie" if name == "pie" else "CGO_ENABLED=0") in by["scratch"]["fix"]
    if r["glibc_required"]:
        assert by["distroless-base"]["summary"] == f"ok if glibc >= {r['glibc_required']} is present"
        assert f"GLIBC_{r['glibc_required']}" in by["distroless-base"]["reason"]


def test_musl_cgo_needs_alpine(get: Any) -> None:
    _, r = get("cgo-musl")
    assert r["interp"] == "/lib/ld-musl-aarch64.so.1" and r["libc"] == "musl"
    v = verdicts(r, "images")
    assert v["alpine"] == "ok" and v["scratch"] == "missing-loader" and v["distroless-base"] == "missing-loader"
    assert "only glibc" in next(p["reason"] for p in r["images"] if p["image"] == "distroless-base")
    assert verdicts(r, "profiles")["baseline"] == "ok"


def test_goarm7_fails_on_pi_zero_goarm6_runs(get: Any) -> None:
    _, r = get("goarm7")
    pz = next(p for p in r["profiles"] if p["profile"] == "pi-zero")
    assert pz["verdict"] == "unsupported-cpu" and pz["cpu"] == "arm1176"
    assert "GOARM=7" in pz["reason"] and "arm1176" in pz["reason"] and "GOARM=6" in pz["fix"]
    assert verdicts(r, "profiles")["x86-64-v2-vm"] is None     # no arm CPU in that profile: no cell
    _, r = get("goarm6")
    assert verdicts(r, "profiles")["pi-zero"] == "ok"


def test_goamd64_v3_fails_on_a_v2_vm(get: Any) -> None:
    _, r = get("goamd64-v3")
    v = verdicts(r, "profiles")
    assert v["x86-64-v2-vm"] == "unsupported-cpu" and v["x86-64-v3"] == "ok" and v["baseline"] == "ok"
    assert next(p["cpu"] for p in r["profiles"] if p["profile"] == "baseline") == "Haswell"
    assert "GOAMD64=v2" in next(p["fix"] for p in r["profiles"] if p["profile"] == "x86-64-v2-vm")


def test_goamd64_v4_is_predicted_emulation_unsupported_on_its_baseline(get: Any) -> None:
    _, r = get("goamd64-v4")
    base = next(p for p in r["profiles"] if p["profile"] == "baseline")
    assert (base["verdict"], base["cpu"]) == ("emulation-unsupported", "Skylake-Server")
    assert "AVX-512" in base["reason"]


def test_an_arch_without_levels_and_386_on_x86_64_models_are_worded_and_predicted(get: Any) -> None:
    """s390x has no Go CPU level: no 'None' in the text. Every x86-64 model runs 386 sse2, so 386 on
    x86-64-v2-vm (Nehalem) is ok, not 'unknown'."""
    path, r = get("s390x")
    base = next(p for p in r["profiles"] if p["profile"] == "baseline")
    assert base["verdict"] == "ok" and "None" not in render_text(r) and "oldest qemu model for s390x" in base["reason"]
    path, r = get("386")
    assert verdicts(r, "profiles")["x86-64-v2-vm"] == "ok"
    assert verdicts(explain(path, ("scratch",), ("Nehalem", "Haswell")), "profiles") == {"Nehalem": "ok", "Haswell": "ok"}


@pytest.mark.parametrize("name", ["windows", "darwin"])
def test_other_oses_are_not_runnable(name: str, get: Any) -> None:
    _, r = get(name)
    assert not r["runnable"]
    assert set(verdicts(r, "images").values()) == set(verdicts(r, "profiles").values()) == {"not-runnable"}
    assert "not-runnable here" in render_text(r)


def test_a_cached_image_is_inspected_instead_of_the_definition(get: Any, tmp_path: Path) -> None:
    """A built rootfs with an older glibc than the binary needs: missing-library, from the cache."""
    path, _ = get("cgo-glibc")
    entry = tmp_path / "entry"
    libdir = entry / "rootfs" / "usr" / "lib" / "x86_64-linux-gnu"
    libdir.mkdir(parents=True)
    (libdir / "libc.so.6").write_text("")
    (entry / "rootfs" / "usr" / "lib64").mkdir()
    (entry / "rootfs" / "usr" / "lib64" / "ld-linux-x86-64.so.2").write_text("")
    (entry / "rootfs" / "lib64").symlink_to("/usr/lib64")   # resolved inside the rootfs, not on the host
    (entry / "manifest.json").write_text(json.dumps(
        {"suite": "bullseye", "packages": [{"name": "libc6", "version": "2.31-13+deb11u11"}]}))

    class CachedBase(ImageStore):
        def path(self, name: str, debian_arch: str, *, verify: Any = "quick") -> Path | None:
            return entry / "rootfs" if name == "distroless-base" else None

    r = explain(path, ["distroless-base", "scratch"], store=CachedBase(tmp_path / "cache"))
    base = r["images"][0]
    assert base["basis"] == "cache" and r["images"][1]["basis"] == "definition"
    assert base["verdict"] == "missing-library"
    assert "GLIBC_2.34" in base["reason"] and "bullseye glibc 2.31" in base["reason"]
    (libdir / "libc.so.6").unlink()
    r = explain(path, ["distroless-base"], store=CachedBase(tmp_path / "cache"))
    assert r["images"][0]["verdict"] == "missing-library" and "libc.so.6" in r["images"][0]["reason"]


# --------------------------------------------------------------------------
# command line


def test_main_explain_prints_text_and_json(binaries: dict[str, Path | str], capsys: pytest.CaptureFixture[str]) -> None:
    path = binaries["goarm7"]
    assert isinstance(path, Path)
    assert main(["explain", str(path), "--profile", "baseline", "--profile", "pi-zero"]) == 0
    out = capsys.readouterr().out
    assert "linux/arm" in out and "GOARM=7" in out
    assert "pi-zero [arm1176]: will fail: unsupported-cpu (GOARM=7 needs arm v7; arm1176 runs up to arm v6)" in out
    assert "scratch: ok" in out
    assert main(["explain", str(path), "--json", "--image", "alpine"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["goarch"] == "arm" and [p["image"] for p in r["images"]] == ["alpine"]
    assert [p["profile"] for p in r["profiles"]] == ["baseline"]


def test_main_explain_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope"
    assert main(["explain", str(missing)]) == 2
    cap = capsys.readouterr()
    assert cap.err.strip() == f"xrun: {missing}: no such file" and cap.out == ""
    assert main(["explain", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_main_explain_bad_arguments_exit_2(binaries: dict[str, Path | str],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    path = str(binaries["goarm6"])
    assert main(["explain", path, "--image", "ubuntu"]) == 2
    assert "unknown image 'ubuntu'" in capsys.readouterr().err
    assert main(["explain", path, "--profile", "pi9"]) == 2
    assert "unknown profile 'pi9'" in capsys.readouterr().err
    assert main(["explain"]) == 2
    assert "Traceback" not in capsys.readouterr().err
