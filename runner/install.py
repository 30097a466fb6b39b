"""How to get each piece xarch needs: one install command per piece, for doctor and the engines alike.

The doctor's table and an engine's infra error used to say different things for the same missing
package (and a fix was changed in one place only). Both take the command from here; an engine may
add why it needs the piece around it.
"""

from __future__ import annotations

QEMU = "sudo apt-get install qemu-user-static"
BWRAP = "sudo apt-get install bubblewrap"
WINE = "sudo apt-get install wine wine64"
WINE32 = "sudo dpkg --add-architecture i386 && sudo apt-get update && sudo apt-get install wine32:i386"
NODE = "sudo apt-get install nodejs"
DOCKER = "sudo apt-get install docker.io"
LIBSECCOMP = "sudo apt-get install libseccomp2"
UTIL_LINUX = "sudo apt-get install util-linux"
BINFMT = "sudo apt-get install qemu-user-static binfmt-support"
BINFMT_MOUNT = "sudo mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc"


def binfmt_enable(qemu: str) -> str:
    """The commands that give this machine a binfmt_misc handler for qemu-<qemu> (flag F, Debian's)."""
    return (f"{BINFMT}, then `{BINFMT_MOUNT}` if /proc/sys/fs/binfmt_misc is empty, and "
            f"`sudo update-binfmts --enable qemu-{qemu}`")
