"""The pool's hand-assembled PID 1 (engines/docker/initelf.py): a well-formed static ELF per arch.

It is never executed here: run with an argument it does kill(-1, SIGKILL). The e2e docker tests run it
as the init of every pooled container.
"""

from __future__ import annotations

import io

import pytest
from elftools.elf.elffile import ELFFile

from xarch.engines.docker.initelf import elf64, helper_elf


@pytest.mark.parametrize(("goarch", "machine"), [("amd64", "EM_X86_64"), ("arm64", "EM_AARCH64")])
def test_helper_is_one_rx_segment_entered_at_its_code(goarch: str, machine: str) -> None:
    data = helper_elf(goarch)
    assert data is not None
    elf = ELFFile(io.BytesIO(data))
    assert elf["e_machine"] == machine and elf["e_type"] == "ET_EXEC" and elf.elfclass == 64
    assert elf.little_endian and elf.num_sections() == 0
    segs = list(elf.iter_segments())
    assert len(segs) == 1 and segs[0]["p_type"] == "PT_LOAD"
    seg = segs[0]
    assert seg["p_flags"] == 5 and seg["p_offset"] == 0          # PF_R | PF_X, from the file's start
    assert seg["p_filesz"] == seg["p_memsz"] == len(data)
    assert elf["e_entry"] == seg["p_vaddr"] + 64 + 56                # right after the two headers
    assert len(data) < 256                                           # "a 200-byte helper"
    if goarch == "arm64":
        assert (len(data) - 120 - 32) % 4 == 0                       # whole instructions before the sigaction


def test_code_is_placed_verbatim_and_other_arches_have_none() -> None:
    code = b"\x90\x90\xc3"
    out = elf64(62, code)
    assert out.endswith(code) and len(out) == 64 + 56 + len(code)
    for goarch in ("386", "arm", "riscv64", "ppc64le", "s390x"):
        assert helper_elf(goarch) is None
