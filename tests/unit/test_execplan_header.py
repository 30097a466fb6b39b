"""execplan.header_kind, the stdlib ELF header reader of `xrun exec`'s fast path, agrees with pyelftools."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.enums import ENUM_E_MACHINE

from xarch.artifact import inspect
from xarch.engines.execplan import header_kind


def _real(name: str) -> Path:
    if name == "python":        # this interpreter, an ELF (PATH's python3 may be a pyenv shell shim)
        return Path(sys.executable).resolve()
    p = shutil.which(name)
    if p is None:
        pytest.skip(f"{name} is not installed")
    return Path(p).resolve()


@pytest.mark.parametrize("name", ["ls", "qemu-aarch64-static", "qemu-arm-static", "python"])
def test_header_kind_matches_pyelftools(name: str) -> None:
    path = _real(name)
    kind = header_kind(str(path))
    assert kind is not None
    ident, machine, flags, interp = kind.split(":", 3)
    with path.open("rb") as f:
        elf = ELFFile(f)
        assert bytes.fromhex(ident) == path.read_bytes()[:16]
        assert int(machine) == ENUM_E_MACHINE[elf["e_machine"]]
        assert int(flags, 16) == elf["e_flags"]
    assert interp == (inspect(path).interp or "")


def test_header_kind_is_none_for_what_is_no_elf(tmp_path: Path) -> None:
    script = tmp_path / "s.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    assert header_kind(str(script)) is None
    assert header_kind(str(tmp_path / "missing")) is None
    short = tmp_path / "short"
    short.write_bytes(b"\x7fELF\x02\x01")
    assert header_kind(str(short)) is None
