"""PE / Mach-O / wasm facts read from real Go builds, and the foreign runners' recorded messages.

The binaries are built once per session from tests/fixtures/foreign (stdlib only, offline). The
classification tests feed foreign_verdict() the exact texts node and wine printed on this machine
(node v20.20.2, wine-8.0 Debian 8.0~repack-4); tests/e2e/test_foreign.py produces them for real.
"""

from __future__ import annotations

import os
import struct
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from xarch.artifact import check_against_target, inspect
from xarch.binfmt import (
    foreign_arch_mismatch,
    go_minor,
    macho_arch,
    macho_arches,
    pe_machine,
    wasm_go_version,
    wasm_goos,
    wasm_imports,
)
from xarch.binfmt.writers import forwarder_dll
from xarch.classify.foreign import foreign_verdict
from xarch.engines import Evidence
from xarch.engines.foreign import refusal
from xarch.plan import Cell, Profile, Target
from xarch.toolchain import go_version

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "foreign"
TARGETS = ("windows/amd64", "windows/386", "windows/arm64", "darwin/amd64", "darwin/arm64", "js/wasm",
           "wasip1/wasm", "linux/amd64")


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory, go_bin: Path) -> dict[str, Path]:
    """The fixture program for every target above, keyed by target."""
    out = tmp_path_factory.mktemp("foreign-builds")

    def build(spec: str) -> tuple[str, Path]:
        goos, goarch = spec.split("/")
        dest = out / spec.replace("/", "-")
        env = {**os.environ, "GOOS": goos, "GOARCH": goarch, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local",
               "GOFLAGS": "-mod=mod"}
        subprocess.run([str(go_bin), "build", "-trimpath", "-o", str(dest), "."], cwd=FIXTURE, env=env,
                       check=True, capture_output=True, timeout=600)
        return spec, dest

    with ThreadPoolExecutor(2) as pool:
        return dict(pool.map(build, TARGETS))


def _fat(slices: list[Path], dest: Path) -> Path:
    """A universal (fat) Mach-O of thin files, laid out as lipo does (4 KiB-aligned slices)."""
    out = bytearray(0x4000)
    struct.pack_into(">II", out, 0, 0xCAFEBABE, len(slices))
    for i, s in enumerate(slices):
        data = s.read_bytes()
        out += bytes(-len(out) % 0x4000)
        cpu, sub = struct.unpack_from("<II", data, 4)
        struct.pack_into(">IIIII", out, 8 + 20 * i, cpu, sub, len(out), len(data), 14)
        out += data
    dest.write_bytes(out)
    return dest


def test_pe_machine_of_real_go_builds(built: dict[str, Path]) -> None:
    assert pe_machine(built["windows/amd64"]) == "amd64"
    assert pe_machine(built["windows/386"]) == "386"
    assert pe_machine(built["windows/arm64"]) == "arm64"
    for other in ("linux/amd64", "darwin/arm64", "js/wasm"):
        assert pe_machine(built[other]) is None
    assert pe_machine("/nonexistent") is None


def test_macho_arch_of_real_go_builds_and_a_fat_file(built: dict[str, Path], tmp_path: Path) -> None:
    assert macho_arch(built["darwin/amd64"]) == "amd64"
    assert macho_arch(built["darwin/arm64"]) == "arm64"
    assert macho_arches(built["windows/amd64"]) == ()
    fat = _fat([built["darwin/amd64"], built["darwin/arm64"]], tmp_path / "universal")
    assert macho_arches(fat) == ("amd64", "arm64")
    assert macho_arch(fat) is None          # no single arch: callers use macho_arches
    java = tmp_path / "A.class"
    java.write_bytes(b"\xca\xfe\xba\xbe\x00\x00\x00\x34" + bytes(64))     # Java 8 class, not a fat Mach-O
    assert macho_arches(java) == ()


def test_wasm_facts_of_real_go_builds(built: dict[str, Path]) -> None:
    assert wasm_goos(built["js/wasm"]) == "js"
    assert wasm_goos(built["wasip1/wasm"]) == "wasip1"
    mods = {m for m, _ in wasm_imports(built["js/wasm"])}
    assert mods == {"gojs"}
    assert ("gojs", "runtime.scheduleTimeoutEvent") in wasm_imports(built["js/wasm"])
    assert {m for m, _ in wasm_imports(built["wasip1/wasm"])} == {"wasi_snapshot_preview1"}
    assert wasm_goos(built["linux/amd64"]) is None
    # the version Go wrote into the data section is the toolchain's
    assert wasm_go_version(built["js/wasm"]) == go_version()
    assert wasm_go_version(built["wasip1/wasm"]) == go_version()
    assert go_minor("go1.27.3") == "go1.27" and go_minor(None) is None


def test_wasm_go_version_falls_back_to_the_version_string(built: dict[str, Path], tmp_path: Path) -> None:
    data = built["js/wasm"].read_bytes().replace(b"\xff Go buildinf:", b"\x00 no buildinf:")
    stripped = tmp_path / "stripped.wasm"
    stripped.write_bytes(data)
    assert wasm_go_version(stripped) == go_version()


@pytest.mark.parametrize(("spec", "artifact", "needle"), [
    ("windows/amd64", "windows/386", "PE header says machine 386"),
    ("windows/386", "windows/amd64", "PE header says machine amd64"),
    ("darwin/arm64", "darwin/amd64", "Mach-O amd64"),
    ("darwin/amd64", "darwin/arm64", "Mach-O arm64"),
    ("wasip1/wasm", "js/wasm", "imports gojs, which is GOOS=js"),
    ("js/wasm", "wasip1/wasm", "GOOS=wasip1"),
])
def test_header_arch_mismatch(built: dict[str, Path], tmp_path: Path, spec: str, artifact: str,
                              needle: str) -> None:
    goos, goarch = spec.split("/")
    f = inspect(built[artifact])
    why = foreign_arch_mismatch(f.path, f.format, goos, goarch)
    assert why is not None and needle in why
    # without Go build info only the header can tell: check_against_target must still catch it
    blind = tmp_path / Path(f.path).name
    blind.write_bytes(Path(f.path).read_bytes().replace(b"\xff Go buildinf:", b"\x00 no buildinf:"))
    facts = inspect(blind)
    assert facts.build is None
    mm = check_against_target(facts, goos, goarch, None)
    assert mm is not None and needle in mm.explanation, mm


@pytest.mark.parametrize("spec", ["windows/amd64", "windows/386", "windows/arm64", "darwin/amd64",
                                  "darwin/arm64", "js/wasm", "wasip1/wasm"])
def test_matching_artifacts_pass(built: dict[str, Path], spec: str) -> None:
    goos, goarch = spec.split("/")
    f = inspect(built[spec])
    assert foreign_arch_mismatch(f.path, f.format, goos, goarch) is None
    assert check_against_target(f, goos, goarch, None) is None


def test_fat_mach_o_with_the_target_slice_matches(built: dict[str, Path], tmp_path: Path) -> None:
    fat = _fat([built["darwin/amd64"], built["darwin/arm64"]], tmp_path / "universal")
    assert foreign_arch_mismatch(fat, "macho", "darwin", "arm64") is None
    why = foreign_arch_mismatch(_fat([built["darwin/amd64"]], tmp_path / "x86only"), "macho", "darwin", "arm64")
    assert why is not None and "amd64" in why


def test_a_wasm_target_whose_file_is_not_wasm(built: dict[str, Path]) -> None:
    mm = check_against_target(inspect(built["linux/amd64"]), "js", "wasm", None)
    assert mm is not None and "needs a wasm file" in mm.explanation
    why = refusal("js", "wasm", built["linux/amd64"], "elf")
    assert why is not None and "not a WebAssembly module" in why


def test_refusal_before_running(built: dict[str, Path]) -> None:
    assert refusal("windows", "amd64", built["windows/amd64"], "pe") is None
    assert refusal("windows", "386", built["windows/386"], "pe") is None
    elf = refusal("windows", "amd64", built["linux/amd64"], "elf")
    assert elf is not None and "wine would start an ELF as a native Linux process" in elf
    arm = refusal("windows", "arm64", built["windows/arm64"], "pe")
    assert arm is not None and "machine arm64" in arm
    assert refusal("js", "wasm", built["js/wasm"], "wasm") is None
    assert refusal("wasip1", "wasm", built["wasip1/wasm"], "wasm") is None
    cross = refusal("js", "wasm", built["wasip1/wasm"], "wasm")
    assert cross is not None and "wasi_snapshot_preview1" in cross


def test_forwarder_dll_is_a_pe_dll_exporting_the_forward(tmp_path: Path) -> None:
    for machine, arch in ((0x8664, "amd64"), (0x14C, "386")):
        dll = tmp_path / f"bcryptprimitives-{arch}.dll"
        dll.write_bytes(forwarder_dll(machine, "bcryptprimitives.dll",
                                      {"ProcessPrng": "advapi32.SystemFunction036"}))
        assert pe_machine(dll) == arch
        data = dll.read_bytes()
        off = struct.unpack_from("<I", data, 0x3C)[0]
        chars = struct.unpack_from("<H", data, off + 22)[0]
        assert chars & 0x2000, "IMAGE_FILE_DLL"
        assert b"ProcessPrng\0" in data and b"advapi32.SystemFunction036\0" in data
        assert len(data) % 0x200 == 0


# ---------------------------------------------------------------------------------------------
# foreign_verdict() on the messages recorded from node and wine

def _cell(spec: str) -> Cell:
    goos, goarch = spec.split("/")
    return Cell(Target(spec, goos, goarch, None), "none", Profile("none", builtin=True), "", (), {})


def _ev(spec: str, stderr: str = "", ran: bool = True, code: int | None = 1, stdout: str = "",
        **recorded: str) -> Evidence:
    return Evidence(_cell(spec).id, "native", inspect("/nonexistent"), ran=ran, exit_code=code,
                    stdout=stdout, stderr=stderr, **recorded)  # type: ignore[arg-type]


# node v20.20.2, wasm_exec_node.js with a wasm_exec.js that lacks one import (an older release)
LINK_ERROR = ('[LinkError: WebAssembly.instantiate(): Import #0 module="gojs" function="runtime.'
              'scheduleTimeoutEvent" error: function import requires a callable]\n')
# ... with a wasm_exec.js that names the module "go" (Go 1.20 and older)
NO_GOJS = '[TypeError: WebAssembly.instantiate(): Import #0 module="gojs" error: module is not an object or function]\n'
# WebAssembly.instantiate(bytes, {}) without wasm_exec.js at all (bug 9)
NO_WASM_EXEC = 'TypeError: WebAssembly.instantiate(): Import #0 module="gojs" error: module is not an object or function\n'
# wine on a text file (or an arm64 PE) named .exe: start.exe's message, on stdout
WINE_NOEXEC = ("Application could not be started, or no application associated with the specified file.\n"
               "ShellExecuteEx failed: File not found.\r\n\n")


@pytest.mark.parametrize("stderr", [LINK_ERROR, NO_GOJS, NO_WASM_EXEC, "Error: Go program has already exited\n"])
def test_wasm_exec_mismatch_is_explained_with_versions_and_the_fix(stderr: str) -> None:
    v = foreign_verdict(_cell("js/wasm"), _ev("js/wasm", stderr, **{
        "wasm_go": "go1.27.3", "wasm_exec_go": "go1.26.4", "wasm_exec": "/go/lib/wasm/wasm_exec.js"}))
    assert v is not None
    verdict, explanation, fix = v
    assert verdict == "exec-format-error"
    assert "wasm_exec.js" in explanation and "go1.27.3" in explanation and "go1.26.4" in explanation
    assert 'cp "$(go env GOROOT)/lib/wasm/wasm_exec.js" .' in fix
    assert "before" in fix


def test_wasip1_module_link_failure() -> None:
    err = 'xarch-wasi: TypeError: WebAssembly.instantiate(): Import #0 module="gojs" error: module is not ...\n'
    v = foreign_verdict(_cell("wasip1/wasm"), _ev("wasip1/wasm", err))
    assert v is not None and v[0] == "exec-format-error" and "GOOS=wasip1" in v[2]


def test_wine_could_not_start_the_file() -> None:
    v = foreign_verdict(_cell("windows/amd64"), _ev("windows/amd64", stdout=WINE_NOEXEC))
    assert v is not None and v[0] == "exec-format-error" and "Application could not be started" in v[1]


def test_static_refusal_and_the_rest_fall_through() -> None:
    v = foreign_verdict(_cell("windows/amd64"), _ev("windows/amd64", ran=False, code=None,
                                                    **{"refusal": "the artifact is an ELF"}))
    assert v is not None and v[0] == "exec-format-error" and "GOOS=windows GOARCH=amd64" in v[2]
    # a program's own failure is for the generic rules (exit-status, Go panic, output)
    assert foreign_verdict(_cell("windows/amd64"), _ev("windows/amd64", "panic: boom\n", code=2)) is None
    assert foreign_verdict(_cell("js/wasm"), _ev("js/wasm", "some error\n")) is None
    assert foreign_verdict(_cell("linux/amd64"), _ev("linux/amd64", LINK_ERROR)) is None
