"""The non-Linux runners on real binaries: windows under wine, js/wasm and wasip1/wasm under node.

Each verdict comes from the fixture program (tests/fixtures/foreign) run by run_foreign() and
classified by classify(), as the pipeline does. What wine and node print for files they cannot
run is recorded here, since the classifier's patterns depend on those exact texts.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from xarch import proc
from xarch.artifact import inspect
from xarch.binfmt import pe_machine
from xarch.classify import Verdict, classify
from xarch.engines import Evidence, foreign
from xarch.engines.foreign import node, wine
from xarch.plan import Cell, Expect, Profile, RunSpec, Target
from xarch.toolchain import go_bin_dir, go_version

pytestmark = pytest.mark.e2e

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "foreign"
HAVE_WINE = shutil.which("wine") is not None and shutil.which("bwrap") is not None
HAVE_NODE = shutil.which("node") is not None and shutil.which("bwrap") is not None
needs_wine = pytest.mark.skipif(not HAVE_WINE, reason="wine (or bwrap) is not installed: "
                                "`apt-get install -y --no-install-recommends wine wine64 bubblewrap`")
needs_node = pytest.mark.skipif(not HAVE_NODE, reason="node (or bwrap) is not installed: "
                                "`apt-get install -y nodejs bubblewrap`")
RUNNERS = [pytest.param("windows/amd64", marks=needs_wine), pytest.param("js/wasm", marks=needs_node),
           pytest.param("wasip1/wasm", marks=needs_node)]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, go_bin: Path) -> dict[str, Path]:
    """foreignprobe for each runner's targets, plus a Linux ELF to hand to the wrong runner."""
    out = tmp_path_factory.mktemp("foreign")

    def build(spec: str) -> tuple[str, Path]:
        goos, goarch = spec.split("/")
        dest = out / f"foreignprobe-{goos}-{goarch}"
        env = {**os.environ, "GOOS": goos, "GOARCH": goarch, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local",
               "GOFLAGS": "-mod=mod"}
        subprocess.run([str(go_bin), "build", "-trimpath", "-o", str(dest), "."], cwd=FIXTURE, env=env,
                       check=True, capture_output=True, timeout=600)
        return spec, dest

    with ThreadPoolExecutor(2) as pool:
        return dict(pool.map(build, ["windows/amd64", "windows/386", "js/wasm", "wasip1/wasm", "linux/amd64"]))


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """The engine's scratch dir for one test; it must be empty again after each cell."""
    d = tmp_path / "engine"
    d.mkdir()
    yield d
    assert list(d.iterdir()) == [], "run_foreign left files behind"


def _cell(spec: str, args: tuple[str, ...]) -> Cell:
    goos, goarch = spec.split("/")
    return Cell(Target(spec, goos, goarch, None), "none", Profile("none", builtin=True), "", args, {})


NO_EXPECTATION = Expect(0, None)


def _run(spec: str, artifact: Path, tmp: Path, *args: str, expect: Expect = NO_EXPECTATION,
         timeout: float = 60) -> tuple[Verdict, Evidence]:
    c = _cell(spec, args)
    run = RunSpec(args, timeout=timeout, expect=expect)
    ev = foreign.run_foreign(c, artifact, run, tmp)
    return classify(c, ev, run.expect, run.timeout), ev


def _copy(src: Path, dest_dir: Path, name: str) -> Path:
    """The artifact under a name no other test uses, so leftover processes can be told apart."""
    dest = dest_dir / name
    shutil.copy2(src, dest)
    return dest


def _processes_mentioning(marker: str) -> list[str]:
    """Live processes whose command line or environment names marker (the host sees every pid ns)."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            blob = (d / "cmdline").read_bytes() + b"\0" + (d / "environ").read_bytes()
            state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in blob and state != "Z":
            found.append(f"{d.name}: {blob[:120]!r}")
    return found


@pytest.mark.parametrize("spec", RUNNERS)
def test_ok_exit_status_wrong_output_and_crash(built: dict[str, Path], scratch: Path, spec: str) -> None:
    art = built[spec]
    v, ev = _run(spec, art, scratch, "hello", expect=Expect(0, "^foreignprobe hello$"))
    assert v.verdict == "ok", (v, ev)
    assert ev.ran and ev.exit_code == 0 and ev.cpu == "native" and ev.notes

    v, ev = _run(spec, art, scratch, "exit", "3")
    assert (v.verdict, ev.exit_code) == ("exit-status", 3), (v, ev)
    assert "exited with status 3, expected 0" in (v.explanation or "")

    v, ev = _run(spec, art, scratch, "print", "hello from X", expect=Expect(0, "^bye"))
    assert v.verdict == "wrong-output", (v, ev)
    assert "hello from X" in (v.explanation or "")

    v, ev = _run(spec, art, scratch, "panic")
    assert v.verdict == "crashed" and "panic: foreignprobe panics" in (v.explanation or ""), (v, ev)
    assert ev.exit_code == 2

    # args, env and stdin reach the program; crypto/rand works (ProcessPrng under wine)
    c = Cell(_cell(spec, ()).target, "none", Profile("none", builtin=True), "", ("env", "XARCH_T"),
             {"XARCH_T": "42"})
    ev = foreign.run_foreign(c, art, RunSpec(("env",), timeout=60), scratch)
    assert ev.stdout.strip().endswith("XARCH_T=42"), ev
    v, ev = _run(spec, art, scratch, "rand", expect=Expect(0, "^rand 32$"))
    assert v.verdict == "ok", (v, ev)
    ev = foreign.run_foreign(_cell(spec, ("stdin",)), art, RunSpec(("stdin",), stdin="fed\n", timeout=60), scratch)
    assert 'read "fed\\n"' in ev.stdout, ev
    # nothing outlives a finished cell either (wineserver, services.exe: the pid namespace is gone)
    assert _processes_mentioning(str(scratch)) == []


@pytest.mark.parametrize("spec", RUNNERS)
def test_timeout_kills_every_process_of_the_cell(built: dict[str, Path], scratch: Path, tmp_path: Path,
                                                 spec: str) -> None:
    marker = f"xarch-timeout-{os.getpid()}-{spec.replace('/', '-')}"
    art = _copy(built[spec], tmp_path, marker + (".exe" if spec.startswith("windows") else ".wasm"))
    if spec.startswith("windows"):
        wine.wine_prefix()       # made once per process, outside the cell's timeout
    t0 = time.monotonic()
    v, ev = _run(spec, art, scratch, "sleep", timeout=3)
    assert v.verdict == "timeout" and ev.timed_out, (v, ev)
    assert time.monotonic() - t0 < 15
    # wine: the program, wineserver, services.exe, winedevice.exe... all carry the cell's
    # WINEPREFIX (under scratch) or the artifact name; node carries the artifact name
    deadline = time.monotonic() + 5
    while (left := _processes_mentioning(marker) + _processes_mentioning(str(scratch))) and \
            time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == [], left


@needs_wine
def test_windows_386_under_wine(built: dict[str, Path], scratch: Path) -> None:
    v, ev = _run("windows/386", built["windows/386"], scratch, "hello", expect=Expect(0, "^foreignprobe hello$"))
    if wine.wine_prefix().wow64:
        assert v.verdict == "ok", (v, ev)
    else:
        # without wine32, wine64 "runs" a 386 PE silently with exit 0 and no output: never let it
        assert v.verdict == "infra-error" and not ev.ran, (v, ev)
        assert "wine32:i386" in (v.fix or "")


@needs_wine
def test_wine_prefix_is_made_once_per_process_and_shimmed(built: dict[str, Path], scratch: Path) -> None:
    first = wine.wine_prefix()
    assert wine.wine_prefix() is first
    print(f"wine prefix created in {first.created_s:.1f} s (wow64={first.wow64}, shim={first.prng_shim})")
    assert first.path.is_dir()
    if first.prng_shim:
        dll = first.path / "drive_c/windows/system32/bcryptprimitives.dll"
        assert pe_machine(dll) == "amd64"
    t0 = time.monotonic()
    _run("windows/amd64", built["windows/amd64"], scratch, "hello")
    print(f"one wine cell: {time.monotonic() - t0:.2f} s")


@needs_wine
def test_non_pe_file_is_refused_before_wine(built: dict[str, Path], scratch: Path, tmp_path: Path) -> None:
    v, ev = _run("windows/amd64", built["linux/amd64"], scratch, "hello")
    assert not ev.ran and v.verdict == "exec-format-error", (v, ev)
    assert "ELF" in (v.explanation or "") and "GOOS=windows GOARCH=amd64" in (v.fix or "")


@needs_wine
def test_what_wine_does_with_files_it_cannot_load(built: dict[str, Path], scratch: Path, tmp_path: Path) -> None:
    """Recorded behaviour of wine 8.0 when handed a non-PE file, bypassing xrun's static check."""
    c = _cell("windows/amd64", ("exit", "5"))
    run = RunSpec(("exit", "5"), timeout=60)
    facts = inspect(built["linux/amd64"])

    def mk(**kw: object) -> Evidence:
        return Evidence(c.id, "native", facts, **kw)  # type: ignore[arg-type]

    # An ELF named .exe: wine starts it as a detached native Linux process and exits 0 at once, so
    # the program's status (5 here) is lost and its output races the sandbox's teardown. This is
    # why run_foreign refuses non-PE files itself instead of trusting wine's exit status.
    ev = wine.run_wine(c, built["linux/amd64"], run, scratch, facts, mk)
    assert ev.exit_code == 0 and ev.stdout in ("", "foreignprobe exiting 5\n"), ev

    # A text file named .exe: wine falls back to ShellExecute and fails with exit status 1.
    txt = tmp_path / "notes.exe"
    txt.write_text("not a program\n")
    ev = wine.run_wine(c, txt, run, scratch, inspect(txt), mk)
    assert ev.exit_code == 1, ev
    assert ev.stdout == ("Application could not be started, or no application associated with the "
                         "specified file.\nShellExecuteEx failed: File not found.\r\n\n"), ev
    v = classify(c, ev, run.expect, run.timeout)
    assert v.verdict == "exec-format-error" and "wine could not start the file" in (v.explanation or "")


@needs_node
def test_wasm_modules_given_to_the_wrong_runner_are_refused(built: dict[str, Path], scratch: Path) -> None:
    v, ev = _run("wasip1/wasm", built["js/wasm"], scratch, "hello")
    assert not ev.ran and v.verdict == "exec-format-error" and "gojs" in (v.explanation or ""), (v, ev)
    v, ev = _run("js/wasm", built["wasip1/wasm"], scratch, "hello")
    assert not ev.ran and v.verdict == "exec-format-error", (v, ev)
    assert "wasi_snapshot_preview1" in (v.explanation or "")


@needs_node
@pytest.mark.parametrize("spec", ["js/wasm", "wasip1/wasm"])
def test_a_wasm_target_whose_file_is_not_wasm(built: dict[str, Path], scratch: Path, spec: str) -> None:
    v, ev = _run(spec, built["linux/amd64"], scratch, "hello")
    assert not ev.ran and v.verdict == "exec-format-error", (v, ev)
    assert "not a WebAssembly module" in (v.explanation or "")


def _fake_goroot(tmp_path: Path, version: str, edit: str) -> Path:
    """A GOROOT whose lib/wasm holds an edited copy of this toolchain's wasm_exec.js."""
    real = node._wasm_exec_dir(Path(go_bin_dir()).parent)
    assert real is not None
    root = tmp_path / f"go-{version}"
    (root / "lib" / "wasm").mkdir(parents=True)
    (root / "VERSION").write_text(f"{version}\ntime 2026-01-01T00:00:00Z\n")
    shutil.copy(real / "wasm_exec_node.js", root / "lib" / "wasm")
    src = (real / "wasm_exec.js").read_text()
    if edit == "drop-import":       # an older release: one import the compiler now emits is missing
        start = src.index('"runtime.scheduleTimeoutEvent"')
        src = src[:start] + src[src.index('"runtime.clearTimeoutEvent"'):]
    else:                           # Go <= 1.20 named the import module "go"
        src = src.replace("gojs: {", "go: {", 1)
    (root / "lib" / "wasm" / "wasm_exec.js").write_text(src)
    return root


@needs_node
@pytest.mark.parametrize(("edit", "message"), [
    ("drop-import", 'LinkError: WebAssembly.instantiate(): Import #0 module="gojs" function="runtime.'
                    'scheduleTimeoutEvent" error: function import requires a callable'),
    ("module-go", 'TypeError: WebAssembly.instantiate(): Import #0 module="gojs" error: module is not an '
                  'object or function'),
])
def test_wasm_exec_js_of_another_go_release(built: dict[str, Path], scratch: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch, edit: str, message: str) -> None:
    """Seed bug 9: the .wasm and the wasm_exec.js that loads it come from different Go releases."""
    root = _fake_goroot(tmp_path, "go1.20.14", edit)
    monkeypatch.setattr(node, "goroots", lambda: [root])
    v, ev = _run("js/wasm", built["js/wasm"], scratch, "hello")
    assert ev.ran and ev.exit_code == 1 and message in ev.stderr, ev.stderr
    assert any("wasm_exec.js mismatch" in n for n in ev.notes), ev.notes
    assert v.verdict == "exec-format-error", v
    assert go_version() in (v.explanation or "") and "go1.20.14" in (v.explanation or "")
    assert str(root / "lib" / "wasm" / "wasm_exec.js") in (v.explanation or "")
    assert 'cp "$(go env GOROOT)/lib/wasm/wasm_exec.js" .' in (v.fix or "")


@needs_node
def test_the_matching_wasm_exec_is_picked_from_the_installed_toolchains(built: dict[str, Path], scratch: Path,
                                                                       tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """With an older toolchain listed first, the toolchain of the .wasm's own release is still chosen."""
    old = _fake_goroot(tmp_path, "go1.20.14", "drop-import")
    real = Path(go_bin_dir()).parent
    monkeypatch.setattr(node, "goroots", lambda: [old, real])
    v, ev = _run("js/wasm", built["js/wasm"], scratch, "hello", expect=Expect(0, "^foreignprobe hello$"))
    assert v.verdict == "ok", (v, ev)
    assert ev.wasm_exec_go == ev.wasm_go == go_version()


@needs_node
def test_wasm_without_wasm_exec_js(built: dict[str, Path], tmp_path: Path) -> None:
    """What loading a Go .wasm without wasm_exec.js gives (bug 9): node's plain instantiate error."""
    script = tmp_path / "plain.mjs"
    script.write_text("import fs from 'node:fs';\n"
                      "try { await WebAssembly.instantiate(fs.readFileSync(process.argv[2]), {}); }\n"
                      "catch (e) { console.error(String(e)); process.exit(1); }\n")
    r = proc.run([proc.which("node", node.NODE_FIX), str(script), str(built["js/wasm"])], timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip() == ('TypeError: WebAssembly.instantiate(): Import #0 module="gojs" error: module '
                                'is not an object or function'), r.stderr
    c = _cell("js/wasm", ())
    ev = Evidence(c.id, "native", inspect(built["js/wasm"]), ran=True, exit_code=1, stderr=r.stderr,
                  wasm_go=go_version())
    v = classify(c, ev, Expect(), 60)
    assert v.verdict == "exec-format-error" and "wasm_exec.js" in (v.fix or ""), v
    assert re.search(r"load it before the \.wasm", v.fix or "")
