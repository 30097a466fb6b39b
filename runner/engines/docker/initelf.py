"""The pool's PID 1: a hand-assembled static ELF, because scratch images have no `sleep` and no shell.

Run with no arguments it sets SIGCHLD to SIG_IGN (so the kernel reaps orphans) and sleeps forever;
run as `init kill` it does kill(-1, SIGKILL): every process of the container but PID 1 and itself
dies, which is how a timeout kills a pooled cell's whole tree and how leftovers are removed.
"""

from __future__ import annotations

import struct


def elf64(machine: int, code: bytes) -> bytes:
    """A static ELF64 LSB executable of one R+X segment holding `code`."""
    base, hdr = 0x400000, 64 + 56
    total = hdr + len(code)
    eh = struct.pack("<4sBBBBB7sHHIQQQIHHHHHH", b"\x7fELF", 2, 1, 1, 0, 0, b"\0" * 7, 2, machine, 1,
                     base + hdr, 64, 0, 0, 64, 56, 1, 0, 0, 0)
    ph = struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, total, total, 0x1000)
    return eh + ph + code


# argc == 1: rt_sigaction(SIGCHLD, SIG_IGN) (the kernel then reaps orphans), then pause()/ppoll() forever.
# argc > 1:  kill(-1, SIGKILL) (every process of the container but PID 1 and itself), exit(0).
_SIGACT_IGN = struct.pack("<QQQQ", 1, 0, 0, 0)
_HELPER_CODE = {
    "amd64": (62, bytes.fromhex(
        "488b0424" "4883f801" "7524"                        # mov rax,[rsp]; cmp rax,1; jne kill
        "488d3537000000" "bf11000000" "31d2" "41ba08000000"  # lea rsi,[act]; edi=17; edx=0; r10d=8
        "b80d000000" "0f05"                                  # rt_sigaction
        "b822000000" "0f05" "ebf7"                           # loop: pause; jmp loop
        "bfffffffff" "be09000000" "b83e000000" "0f05"        # kill: kill(-1, 9)
        "31ff" "b83c000000" "0f05") + _SIGACT_IGN),          # exit(0)
    "arm64": (183, b"".join(struct.pack("<I", w) for w in (
        0xF94003E0, 0xF100041F, 0x540001C1,                  # ldr x0,[sp]; cmp x0,#1; b.ne kill
        0xD2800220, 0x10000281, 0xD2800002, 0xD2800103,      # x0=17; adr x1,act; x2=0; x3=8
        0xD28010C8, 0xD4000001,                              # rt_sigaction
        0xD2800000, 0xD2800001, 0xD2800002, 0xD2800003,      # loop: ppoll(0,0,0,0)
        0xD2800928, 0xD4000001, 0x17FFFFFA,                  #       b loop
        0x92800000, 0xD2800121, 0xD2801028, 0xD4000001,      # kill: kill(-1, 9)
        0xD2800000, 0xD2800BA8, 0xD4000001, 0)) + _SIGACT_IGN),  # exit(0); pad to 8
}


def helper_elf(goarch: str) -> bytes | None:
    """The pool's init/killer helper for the daemon's arch, or None when there is none."""
    spec = _HELPER_CODE.get(goarch)
    return elf64(*spec) if spec else None

