"""Minimal root filesystems ("images") rebuilt from Debian packages, so qemu-user can run a cross-built
binary inside one without a container registry.

definitions (images/*.yaml) -> apt_sources (the host's mirrors) -> apt (a private apt per suite and
arch) -> assemble (merged-/usr rootfs, manifest) -> store (the content-addressed, verified cache).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ..errors import BuildError, ImageUnavailable, RecipeError, UnknownImage

if TYPE_CHECKING:
    from ._fs import resolve_in_root
    from .definitions import ImageDef, load_definitions
    from .external import ImageConfig, ImageSourceError, UnpackedImage, parse_source, platforms_of, unpack
    from .store import DEBIAN_ARCHES, CachedImage, ImageStore

# loaded on first use: `xrun exec` on scratch needs none of apt, the store or the archive readers
_LAZY = {"resolve_in_root": "_fs", "ImageDef": "definitions", "load_definitions": "definitions",
         "ImageConfig": "external", "ImageSourceError": "external", "UnpackedImage": "external",
         "parse_source": "external", "platforms_of": "external", "unpack": "external",
         "DEBIAN_ARCHES": "store", "CachedImage": "store", "ImageStore": "store"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

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
