"""CPU profiles from real machines (contract §7, issue 16): a captured /proc/cpuinfo or a catalogue
entry becomes, per arch, a qemu CPU model plus feature toggles that offers what the machine offers.

features.py (the data: cpuinfo names, dependencies, qemu toggles), machine.py (parse and resolve),
catalogue.py (real machines as builtin profiles), capture.py (`xrun profile capture`, stdlib only).
"""

from __future__ import annotations

from .. import platforms
from .catalogue import CATALOGUE, CatalogueEntry, resolved_catalogue
from .machine import Machine, Resolved, parse_cpuinfo, read_cpuinfo, resolve, resolve_machine

# every profile a matrix or `--profile` may name without defining it
BUILTIN_PROFILES = ("baseline", "host", *CATALOGUE, *platforms.HARDWARE_PROFILES)


def describe_builtin(name: str) -> str | None:
    """One line on a builtin hardware profile (None for baseline, host and unknown names)."""
    if name in CATALOGUE:
        return CATALOGUE[name].description
    hw = platforms.HARDWARE_PROFILES.get(name)
    return hw.description if hw else None

__all__ = [
    "BUILTIN_PROFILES",
    "CATALOGUE",
    "CatalogueEntry",
    "Machine",
    "Resolved",
    "describe_builtin",
    "parse_cpuinfo",
    "read_cpuinfo",
    "resolve",
    "resolve_machine",
    "resolved_catalogue",
]
