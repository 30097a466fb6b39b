"""Engines run one cell and return its evidence. They hold no verdict logic."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from ..artifact import ArtifactFacts
from ..plan import Cell, RunSpec
from ..proc import TAIL_BYTES
from .limits import LimitOutcome


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
    # recorded by the foreign runners (wine, node) only; classify.foreign reads them
    refusal: str | None = None              # why the runner was not started: the file is not for it
    foreign_runner: str | None = None       # "wine" or "node"
    pe_machine: str | None = None           # wine: the PE machine ("?" when unknown)
    node_version: str | None = None         # node: `node --version`
    wasm_go: str | None = None              # js/wasm: the Go that built the .wasm ("unknown")
    wasm_exec_go: str | None = None         # js/wasm: the Go whose wasm_exec.js ran it ("unknown")
    wasm_exec: str | None = None            # js/wasm: the path of that wasm_exec.js
    extra: Mapping[str, str] = field(default_factory=dict)

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


class Engine(Protocol):
    """A context manager that runs cells; always cleans up on exit."""

    name: str

    def __enter__(self) -> Engine: ...
    def __exit__(self, *exc: object) -> None: ...
    @property
    def empty_root(self) -> Path: ...
    def preflight(self, cells: tuple[Cell, ...]) -> None: ...
    def run_cell(self, cell: Cell, artifact: Path, rootfs: Path, run: RunSpec) -> Evidence: ...


def make_engine(name: str) -> Engine:
    """The engine of that name (only the docker engine's module imports the docker SDK)."""
    if name == "docker":
        from .docker import DockerEngine

        return DockerEngine()
    from .local import LocalEngine

    return LocalEngine()
