"""The records every stage shares (what a cell showed, its verdict) and the rules every view of a run
shares: whether it passed, and its counts.

The records live here, below the engines and the classifier, so that an engine makes Evidence and
the classifier reads it without either importing the other.

`xrun run`'s exit code, `xrun report merge`, the GitHub step summary, the HTML page and the console
used to derive these each on their own, and disagreed (a build found not reproducible failed the
run but the summary said "passed"; the console counted not-runnable cells as ok). They all call
these two functions now, over the report's dict form (a RunResult gives the same dict).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from .artifact import ArtifactFacts
from .plan import Limits, size_text
from .proc import TAIL_BYTES


class Verdicts(StrEnum):
    """Every verdict name (contract §2), with the facts each view needs: the one vocabulary.

    The matrix's xfail accepts the cell verdicts but ok; the console colours, the HTML page groups
    by category and the merge ranks builds by severity, all from here.
    """

    OK = "ok"
    EXIT_STATUS = "exit-status"
    WRONG_OUTPUT = "wrong-output"
    EXEC_FORMAT_ERROR = "exec-format-error"
    MISSING_LOADER = "missing-loader"
    MISSING_LIBRARY = "missing-library"
    UNSUPPORTED_CPU = "unsupported-cpu"
    EMULATION_UNSUPPORTED = "emulation-unsupported"
    CRASHED = "crashed"
    TIMEOUT = "timeout"
    NOT_RUNNABLE = "not-runnable"
    INFRA_ERROR = "infra-error"
    BUILD_FAILED = "build-failed"           # builds only
    ARTIFACT_MISMATCH = "artifact-mismatch"  # builds only

    @property
    def for_builds(self) -> bool:
        return self in (Verdicts.OK, Verdicts.BUILD_FAILED, Verdicts.ARTIFACT_MISMATCH)

    @property
    def for_cells(self) -> bool:
        return self not in (Verdicts.BUILD_FAILED, Verdicts.ARTIFACT_MISMATCH)

    @property
    def category(self) -> str:
        """The colour family of the HTML grid: ok, cpu, format, emu, skip or fail."""
        return _CATEGORY.get(self, "fail")

    @property
    def color(self) -> str:
        """The console's rich style."""
        return _COLOR.get(self, "red")

    @property
    def severity(self) -> int:
        """How bad a build verdict is (the merge keeps the worst copy of a target's build)."""
        return {Verdicts.OK: 0, Verdicts.ARTIFACT_MISMATCH: 1, Verdicts.BUILD_FAILED: 2}.get(self, 3)

    @classmethod
    def get(cls, name: str) -> Verdicts | None:
        try:
            return cls(name)
        except ValueError:
            return None


_CATEGORY = {Verdicts.OK: "ok", Verdicts.UNSUPPORTED_CPU: "cpu", Verdicts.EXEC_FORMAT_ERROR: "format",
             Verdicts.MISSING_LOADER: "format", Verdicts.MISSING_LIBRARY: "format",
             Verdicts.ARTIFACT_MISMATCH: "format", Verdicts.EMULATION_UNSUPPORTED: "emu",
             Verdicts.NOT_RUNNABLE: "skip"}
_COLOR = {Verdicts.OK: "green", Verdicts.EXEC_FORMAT_ERROR: "magenta", Verdicts.MISSING_LOADER: "magenta",
          Verdicts.MISSING_LIBRARY: "magenta", Verdicts.ARTIFACT_MISMATCH: "magenta",
          Verdicts.UNSUPPORTED_CPU: "yellow", Verdicts.EMULATION_UNSUPPORTED: "blue",
          Verdicts.NOT_RUNNABLE: "dim", Verdicts.INFRA_ERROR: "bold red", Verdicts.BUILD_FAILED: "bold red"}
CELL_VERDICTS = tuple(str(v) for v in Verdicts if v.for_cells)


@dataclass(frozen=True)
class Verdict:
    verdict: str
    explanation: str | None = None
    fix: str | None = None

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"


@dataclass(frozen=True, kw_only=True)
class LimitOutcome:
    """What held for one cell, and whether it struck (recorded in the evidence)."""

    limits: Limits                  # the numbers the cell ran under
    memory_by: str                  # what enforced memory: "cgroup v1", "RLIMIT_DATA", "docker --memory, no swap"
    pids_by: str                    # "cgroup v2", "RLIMIT_NPROC, per user", "docker --pids-limit", "not enforced: why"
    mechanism: str                  # cgroup v2 | cgroup v1 | rlimit | docker
    oom_killed: bool = False
    pids_hit: bool = False
    memory_peak: int | None = None  # bytes, when the cgroup reports it

    @property
    def memory(self) -> str:
        return f"{size_text(self.limits.memory)} ({self.memory_by})"

    @property
    def pids(self) -> str:
        return f"{self.limits.pids} ({self.pids_by})"

    @property
    def output(self) -> str:
        return f"{size_text(self.limits.output)} (xrun stops the cell)"

    @property
    def pids_enforced(self) -> bool:
        return not self.pids_by.startswith("not enforced")

    def as_json(self) -> dict[str, object]:
        return {"memory": self.memory, "pids": self.pids, "output": self.output,
                "mechanism": self.mechanism, "oom_killed": self.oom_killed, "pids_hit": self.pids_hit,
                "memory_peak": self.memory_peak}


@dataclass(frozen=True, kw_only=True)
class Fault:
    """The instruction a cell died on (contract §7 `evidence.fault`), read from the fault itself.

    `source` says where the PC came from: Go's own fatal-signal report (go-panic) or the guest core
    qemu wrote (core-dump); `origin` whose code it is: go-runtime, go-user, go-asm, cgo-c or unknown.
    """

    signal: str                          # SIGILL, SIGSEGV, SIGBUS, SIGFPE
    pc: int
    source: str                          # go-panic | core-dump | qemu-log
    instruction: str | None = None       # "vpxor ymm0, ymm0, ymm0"
    extension: str | None = None         # "AVX2"
    symbol: str | None = None            # "main.useAVX"
    location: str | None = None          # "avx_amd64.s:4"
    origin: str = "unknown"
    model_has_extension: bool | None = None
    model: str | None = None             # the qemu CPU model the cell ran

    def as_json(self) -> dict[str, object]:
        return {"signal": self.signal, "pc": f"{self.pc:#x}", "source": self.source, "symbol": self.symbol,
                "location": self.location, "origin": self.origin, "instruction": self.instruction,
                "extension": self.extension, "model_has_extension": self.model_has_extension,
                "line": self.line()}

    def line(self) -> str:
        """One line: "SIGILL at 0x49a18f in main.add8 (add8_amd64.s:8): vmovdqu ymm0, [rsi] needs AVX;
        Westmere has no AVX"."""
        at = f" in {self.symbol}" if self.symbol else ""
        loc = f" ({self.location})" if self.location else ""
        what = self.instruction or "an instruction xrun could not decode"
        text = f"{self.signal} at {self.pc:#x}{at}{loc}: {what}"
        if self.extension:
            text += f" needs {self.extension}"
            if self.model and self.model_has_extension is False:
                text += f"; {self.model} has no {self.extension}"
            elif self.model and self.model_has_extension:
                text += f"; {self.model} has {self.extension} on real hardware"
        return text


# an Evidence note: the output went straight to the caller's terminal, so xrun never saw it (`xrun exec`)
STDERR_TO_TERMINAL = "stderr went straight to the terminal"


@dataclass(frozen=True)
class Evidence:
    """Everything observed for a cell; classify() turns it into a verdict."""

    cell_id: str
    cpu: str                                # qemu model, or "native"
    artifact: ArtifactFacts
    ran: bool                               # False when a static check decided (loader, format)
    exit_code: int | None = None
    signal: int | None = None
    stdout: str = ""
    stderr: str = ""
    duration_s: float = 0.0
    timed_out: bool = False
    loader_missing: str | None = None
    emulator: str | None = None             # qemu binary used, None when native
    tcg_missing: tuple[str, ...] = ()       # CPU features the model asks for that TCG lacks
    notes: tuple[str, ...] = ()             # e.g. env set to work around an emulator bug
    infra: str | None = None                # the runner itself failed: what, and the fix
    infra_fix: str | None = None
    path: str = ""                          # how the cell was started (recorded for the report)
    limits: LimitOutcome | None = None      # what bounded the cell, and whether a limit struck
    output_limited: bool = False            # stdout+stderr passed run.limits.output: xrun stopped it
    hardening: tuple[str, ...] = ()         # what the sandbox withheld (and any hardening that was missing)
    children: str | None = None             # how child processes run: private/host binfmt, natively, or not
    user: str | None = None                 # "uid 65532 (the image's USER nonroot)" when not root
    # recorded by the foreign runners (wine, node) only; classify.foreign reads them
    refusal: str | None = None              # why the runner was not started: the file is not for it
    foreign_runner: str | None = None       # "wine" or "node"
    pe_machine: str | None = None           # wine: the PE machine ("?" when unknown)
    node_version: str | None = None         # node: `node --version`
    wasm_go: str | None = None              # js/wasm: the Go that built the .wasm ("unknown")
    wasm_exec_go: str | None = None         # js/wasm: the Go whose wasm_exec.js ran it ("unknown")
    wasm_exec: str | None = None            # js/wasm: the path of that wasm_exec.js
    extra: Mapping[str, str] = field(default_factory=dict)
    # read from the binary and the fault after the run (runner/forensics)
    fault: Fault | None = None
    core: tuple[int, int] | None = None         # (signal, pc) from qemu's guest core (engines set it)
    core_note: str | None = None                # why no guest core could be had, when one was sought
    # the loader could not bind symbols: which imports need what, and the image's C library
    symbols: tuple[tuple[str, str | None], ...] = ()    # (symbol, version need or None for musl)
    image_libc: str | None = None               # "glibc 2.36", "musl 1.2.3"

    def trimmed(self, keep: int = TAIL_BYTES) -> Evidence:
        """The same evidence with stdout and stderr cut to their last `keep` bytes, for the report.

        Engines keep the whole output (up to run.limits.output) so that expect.stdout is matched
        against all of it; once classified, a tail is what the report needs.
        """
        def cut(text: str) -> str:
            data = text.encode("utf-8", "replace")
            if len(data) <= keep:
                return text
            return (f"[... {len(data) - keep} bytes dropped ...]\n"
                    + data[-keep:].decode("utf-8", "replace"))
        return replace(self, stdout=cut(self.stdout), stderr=cut(self.stderr))


def summary(builds: Sequence[Mapping[str, Any]], cells: Sequence[Mapping[str, Any]],
            planned_cells: int) -> dict[str, Any]:
    """The report's counts: a not-runnable cell is neither ok nor failed (its build failed)."""
    xf = sum(1 for c in cells if c.get("xfail") and c.get("passed"))
    nr = sum(1 for c in cells if c.get("passed") and c.get("verdict") == "not-runnable")
    ok = sum(1 for c in cells if c.get("passed") and not c.get("xfail")) - nr
    return {"cells": len(cells), "ok": ok, "failed": len(cells) - ok - xf - nr, "xfail": xf,
            "not_runnable": nr,
            "builds_failed": sum(1 for b in builds if not build_ok(b)),
            "planned_cells": planned_cells}


def build_ok(b: Mapping[str, Any]) -> bool:
    """A build passed: verdict ok, and not found unreproducible when the matrix asked for it."""
    return b.get("verdict") == "ok" and b.get("reproducible") is not False


def passed(report: Mapping[str, Any]) -> bool:
    """The run passed: not interrupted, every build ok, every planned cell ran and passed."""
    cells = list(report.get("cells") or [])
    planned = int((report.get("summary") or {}).get("planned_cells", len(cells)))
    return (not report.get("interrupted")
            and all(build_ok(b) for b in report.get("builds") or [])
            and all(c.get("passed") for c in cells) and len(cells) == planned)
