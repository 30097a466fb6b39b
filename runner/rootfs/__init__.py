"""Minimal root filesystems ("images") rebuilt from Debian packages, so qemu-user can run a cross-built
binary inside one without a container registry.

definitions (images/*.yaml) -> apt_sources (the host's mirrors) -> apt (a private apt per suite and
arch) -> assemble (merged-/usr rootfs, manifest) -> store (the content-addressed, verified cache).
"""

from __future__ import annotations

from ..errors import BuildError, ImageUnavailable, RecipeError, UnknownImage
from .assemble import resolve_in_root
from .definitions import ImageDef, load_definitions
from .external import ImageConfig, ImageSourceError, UnpackedImage, parse_source, platforms_of, unpack
from .store import DEBIAN_ARCHES, CachedImage, ImageStore

__all__ = [
    "DEBIAN_ARCHES",
    "BuildError",
    "CachedImage",
    "ImageConfig",
    "ImageDef",
    "ImageSourceError",
    "ImageStore",
    "ImageUnavailable",
    "RecipeError",
    "UnknownImage",
    "UnpackedImage",
    "load_definitions",
    "parse_source",
    "platforms_of",
    "resolve_in_root",
    "unpack",
]
