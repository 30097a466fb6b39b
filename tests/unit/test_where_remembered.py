"""forensics.symbols.where is remembered across runs while the binary is the same file, and only a
complete answer is remembered (a warm matrix's faulting cell must not pay `go tool addr2line` again)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from xarch import proc
from xarch.forensics import symbols


def _pc_of(binary: Path, name: str) -> int:
    with open(binary, "rb") as f:
        sym = ELFFile(f).get_section_by_name(".symtab").get_symbol_by_name(name)[0]  # type: ignore[union-attr]
        return int(sym.entry.st_value) + 4


def test_an_answer_is_remembered_per_file_and_remade_when_it_changes(probe_arm64: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XARCH_CACHE_DIR", str(tmp_path / "cache"))
    binary = tmp_path / "probe"
    binary.write_bytes(probe_arm64.read_bytes())
    pc = _pc_of(binary, "main.main")
    symbols._addr2line.cache_clear()
    first = symbols.where(binary, pc)
    assert first.symbol == "main.main" and first.origin == "go-user" and first.location, first
    runs: list[object] = []
    real = proc.run

    def failing(argv, **kw):        # addr2line unavailable from now on
        runs.append(argv)
        return real(["false"])

    def counted(argv, **kw):
        runs.append(argv)
        return real(argv, **kw)
    monkeypatch.setattr(proc, "run", failing)
    symbols._addr2line.cache_clear()
    assert symbols.where(binary, pc) == first and runs == []          # remembered: not asked again
    os.utime(binary, ns=(1, 1))                                       # the same path, another file
    degraded = symbols.where(binary, pc)
    assert len(runs) == 1 and degraded.symbol == "main.main" and degraded.origin == "go-user", degraded
    monkeypatch.setattr(proc, "run", counted)
    symbols._addr2line.cache_clear()
    assert symbols.where(binary, pc) == first and len(runs) == 2       # the incomplete answer was not kept
    assert symbols.where(binary, pc) == first and len(runs) == 2       # the complete one is
    assert len(list((tmp_path / "cache" / "probes").glob("where-*.json"))) == 1     # one slot per path and pc
