"""Engines run one cell and return its evidence. They hold no verdict logic."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:       # engines/execplan.py is imported by `xrun exec` without the model
    from ..model import Evidence
    from ..plan import Cell, RunSpec

__all__ = ["Engine", "Evidence", "make_engine"]


def __getattr__(name: str) -> Any:
    if name == "Evidence":
        from ..model import Evidence

        return Evidence
    raise AttributeError(name)


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
