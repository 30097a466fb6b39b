"""The verdicts only the foreign runners (wine, node) produce, from what they recorded and printed.

Pure, like the Linux rules: it reads the evidence only (Evidence.refusal, .wasm_go, .wasm_exec_go,
.wasm_exec and the output). classify() asks it first for windows, js and wasip1 cells, before the
generic rules (exit status, Go panics, output) apply.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .. import platforms
from ..binfmt import go_minor
from ..plan import Cell

if TYPE_CHECKING:
    from ..model import Evidence

WASM_EXEC_FIX = 'cp "$(go env GOROOT)/lib/wasm/wasm_exec.js" .'

_LINK = re.compile(r"(LinkError: [^\n]*|TypeError: WebAssembly\.instantiate\(\): Import #\d+ module=\"[^\"]*\"[^\n]*|"
                   r"Go program has already exited)")
_WINE_NOEXEC = "Application could not be started, or no application associated with the specified file"
_WINE_NO_PRNG = "bcryptprimitives.dll not found"


def foreign_verdict(cell: Cell, ev: Evidence) -> tuple[str, str, str] | None:
    """(verdict, explanation, fix) for what only the foreign runners produce; None: classify as usual.

    Pure: reads the evidence only. classify() calls it for windows, js and wasip1 cells before its
    generic rules (exit status, Go panics, output) apply.
    """
    goos = cell.target.os
    runner = platforms.OSES[goos].runner if goos in platforms.OSES else None
    if runner is None or ev.infra or ev.timed_out:
        return None
    spec = cell.target.spec
    if not ev.ran and ev.refusal is not None:
        return ("exec-format-error", f"{ev.refusal}. A {spec} machine cannot execute it; xrun did not start "
                f"{runner}.",
                f"make the build produce a {spec} binary (GOOS={goos} GOARCH={cell.target.arch}); check build.env, "
                "the target's env and the build command for a hard-coded GOOS/GOARCH or a prebuilt file")
    err = ev.stderr
    if goos == "windows":
        if _WINE_NOEXEC in ev.stdout + err:     # start.exe prints it, on stdout
            return ("exec-format-error", f"wine could not start the file: '{_WINE_NOEXEC}' (exit {ev.exit_code}); "
                    f"it is not a Windows program wine can load for {spec}.",
                    f"make the build produce a {spec} PE executable (GOOS=windows GOARCH={cell.target.arch})")
        if _WINE_NO_PRNG in err:
            return ("infra-error", "this wine has no bcryptprimitives.dll (ProcessPrng, added in Wine 8.13), which "
                    "the Go runtime loads at start since Go 1.24, and xarch's forwarder DLL was not used",
                    "install Wine 8.13 or newer, or report this to xarch with `wine --version`")
        return None
    m = _LINK.search(err)
    if m is None:
        return None
    line = m.group(1).strip()
    if goos == "wasip1":
        return ("exec-format-error", f"node's WASI could not instantiate the module: '{line}'. It needs imports "
                "that a WASI preview1 runtime does not provide.",
                f"build it with GOOS=wasip1 GOARCH=wasm for {spec}; js/wasm modules need Go's wasm_exec.js")
    built = ev.wasm_go or "an unknown Go"
    used = ev.wasm_exec_go or "an unknown Go"
    path = ev.wasm_exec or "wasm_exec.js"
    same = go_minor(built) is not None and go_minor(built) == go_minor(used)
    why = ("the .wasm needs the Go runtime glue of the release that built it, and this one does not provide "
           "what it imports" if same else
           "wasm_exec.js and the gojs imports the compiler emits change between Go releases, so a .wasm only "
           "runs with the wasm_exec.js of the Go that built it")
    return ("exec-format-error",
            f"node could not run the .wasm with wasm_exec.js: '{line}'. The .wasm was built by {built} and the "
            f"wasm_exec.js used ({path}) is {used}'s; {why}. In a browser, the same mismatch (or no wasm_exec.js "
            "at all) fails the same way.",
            f"ship the wasm_exec.js of the Go that built the .wasm ({built}) and load it before the .wasm: "
            f"`{WASM_EXEC_FIX}` (with that go), then <script src=\"wasm_exec.js\"></script> before "
            "`new Go()` and WebAssembly.instantiateStreaming; or rebuild the .wasm with " + used)
