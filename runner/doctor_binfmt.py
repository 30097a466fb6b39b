"""binfmt_misc lore for `xrun doctor`: reading the kernel's handler entries, what a missing F flag
breaks, and the command that registers (or drops and re-registers) an emulator with it.

Neither engine needs binfmt_misc for a verdict (both start qemu-<arch>-static explicitly), but a
program that execs *another* foreign binary goes through the kernel's handler, and inside a container
or chroot only a handler registered with F (the interpreter opened at registration) can do that.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from . import install, platforms

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
BINFMT_D = Path("/usr/lib/binfmt.d")        # where Debian's qemu-user-static keeps its registrations
BINFMT_IMAGE = "tonistiigi/binfmt:qemu-v9.2.2-52"
QEMU_FIX = install.QEMU
MOUNT_FIX = "sudo mount -t binfmt_misc binfmt_misc {dir}"
NO_HANDLER = "no handler registered"


@dataclass(frozen=True)
class Handler:
    enabled: bool
    interpreter: str
    flags: str


def read_handler(entry: Path) -> Handler | None:
    """Parse a binfmt_misc entry file ('enabled', 'interpreter PATH', 'flags: OCF', ...)."""
    try:
        lines = entry.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    enabled, interp, flags = False, "", ""
    for ln in lines:
        if ln.strip() in ("enabled", "disabled"):
            enabled = ln.strip() == "enabled"
        elif ln.startswith("interpreter "):
            interp = ln.split(" ", 1)[1].strip()
        elif ln.startswith("flags:"):
            flags = ln.split(":", 1)[1].strip()
    return Handler(enabled, interp, flags)


def conf_has_f(qemu: str | None) -> bool:
    """Whether the distro's registration line for this emulator carries the F flag."""
    try:
        line = (BINFMT_D / f"qemu-{qemu}.conf").read_text(encoding="utf-8").strip()
    except OSError:
        return False
    return "F" in line.rsplit(":", 1)[-1]


def register(a: platforms.Arch, binfmt_dir: Path) -> str:
    """The command that registers the emulator with the F flag."""
    if conf_has_f(a.qemu):
        return f"sudo sh -c 'cat {BINFMT_D}/qemu-{a.qemu}.conf > {binfmt_dir}/register'"
    return f"docker run --privileged --rm {BINFMT_IMAGE} --install {a.oci}"


def reregister(a: platforms.Arch, binfmt_dir: Path) -> str:
    """Drop the current handler, then register one with the F flag."""
    return f"echo -1 | sudo tee {binfmt_dir}/qemu-{a.qemu} && {register(a, binfmt_dir)}"


def segv_fix(a: platforms.Arch, binfmt_dir: Path) -> str:
    """How to replace a qemu build that crashes on this kernel (and its handler, when one points at it)."""
    distro = QEMU_FIX + (f", then re-register it: {reregister(a, binfmt_dir)}" if conf_has_f(a.qemu) else "")
    return (f"use a qemu build that works on this kernel: the distro's ({distro}), or pin a fixed "
            f"tonistiigi/binfmt: docker run --privileged --rm tonistiigi/binfmt --uninstall qemu-{a.qemu} && "
            f"docker run --privileged --rm {BINFMT_IMAGE} --install {a.oci}")


def mount_state(binfmt_dir: Path) -> tuple[bool, str, str | None]:
    """(usable, what is there, fix) of the binfmt_misc mount itself."""
    status = binfmt_dir / "status"
    try:
        state = status.read_text(encoding="utf-8").strip()
    except OSError:
        return False, f"not mounted at {binfmt_dir}", MOUNT_FIX.format(dir=binfmt_dir)
    if state != "enabled":
        return False, f"mounted at {binfmt_dir} but switched off (status: {state})", f"echo 1 | sudo tee {status}"
    return True, f"mounted at {binfmt_dir}", None


def flag_findings(hd: Handler, a: platforms.Arch, binfmt_dir: Path) -> tuple[list[str], list[str], str | None]:
    """(fatal, notes, fix) from a handler's F flag and whether its interpreter path still exists."""
    fatal: list[str] = []
    notes: list[str] = []
    fix: str | None = None
    has_f = "F" in hd.flags
    if not has_f:
        fatal.append("no F flag: the interpreter is looked up inside each container or chroot, where it "
                     "does not exist, so foreign binaries fail with 'no such file or directory' there")
        fix = reregister(a, binfmt_dir)
    if not interpreter_exists(hd):
        if has_f:
            # F: the kernel opened the file at registration and keeps using it; only the path is gone.
            notes.append("the interpreter path no longer exists (the kernel still holds the file it "
                         "opened at registration; re-register after reinstalling)")
            fix = fix or f"{QEMU_FIX} && {reregister(a, binfmt_dir)}"
        else:
            fatal.append("the interpreter does not exist")   # fix: the F-less handler's re-registration
    return fatal, notes, fix


def interpreter_exists(hd: Handler) -> bool:
    return bool(hd.interpreter) and os.path.exists(hd.interpreter)
