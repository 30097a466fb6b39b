"""Targets from a goreleaser build: read `dist/artifacts.json` and map each binary to an xarch target.

goreleaser records every artifact it made, one JSON object each: `name`, `path` (relative to the
directory goreleaser ran in, the parent of `dist/`), `goos`, `goarch`, the level of that arch in
its Go variable's lower-cased name (`goamd64: "v1"`, `goarm: "6"`, `goarm64: "v8.0"`, `go386`,
`goppc64`, `goriscv64`, and `gomips` for all four mips arches), `target` (`linux_arm_6`), `type`
(`"Binary"`, `"Archive"`, `"Checksum"`, ...), `internal_type` (4 for a build's output, 2 for the
same binary copied out for upload) and `extra` (`ID`, `Binary`, `Ext`, `Builder`, ...).

Mapping, decided here: the level becomes the target's variant in xarch's spelling (goarm "6" ->
`linux/arm/v6`), except that **Go's default level is dropped** (goamd64 "v1" -> `linux/amd64`,
goarm "7" -> `linux/arm`, goarm64 "v8.0" -> `linux/arm64`). The two spellings build and test the
same thing (same GO* value, same baseline CPU), and the short one is how a matrix writes it, so
cell ids match a hand-written matrix. goreleaser's own default GOARM is 6, so its arm builds
usually come out as `linux/arm/v6`, which is right: that is what it built.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

from . import platforms
from .errors import ConfigError, read_text

BINARY_TYPE = "Binary"
# internal_type of a build's own output; UploadableBinary (2) is the same file copied for a release
BUILD_OUTPUT = 4
# goreleaser has one gomips field where Go has GOMIPS and GOMIPS64
_FIELD_ALIASES = {"gomips64": "gomips"}


def _level_field(a: platforms.Arch) -> str | None:
    if a.level_var is None:
        return None
    f = a.level_var.lower()
    return _FIELD_ALIASES.get(f, f)


def target_spec(art: dict[str, Any], where: str) -> str | None:
    """The xarch target for one Binary artifact; None if xarch has no such os or arch."""
    goos, goarch = str(art.get("goos") or ""), str(art.get("goarch") or "")
    if goos not in platforms.OSES or goarch not in platforms.ARCHES:
        return None
    a = platforms.arch(goarch)
    field = _level_field(a)
    raw = str(art.get(field) or "") if field else ""
    if not raw:
        return f"{goos}/{goarch}"
    level = a.level_from_env(raw)
    if level is None:
        raise ConfigError(f"{field} '{raw}' is not a level of {goarch} xarch knows; known: "
                          f"{', '.join(a.levels)}", file=where)
    return f"{goos}/{goarch}" if level == a.default_level else f"{goos}/{goarch}/{level}"


def targets_from_goreleaser(path: str | os.PathLike[str], *, build_ids: Collection[str] | None = None,
                            skipped: list[str] | None = None) -> list[tuple[str, Path]]:
    """Each binary goreleaser built, as (xarch target spec, absolute artifact path), in file order.

    `build_ids` keeps only those goreleaser build ids (`extra.ID`). A binary whose os or arch xarch
    does not know (or a darwin universal binary, goarch "all") is left out, with the reason appended
    to `skipped`. Raises ConfigError (exit 2) naming the file when it is missing or malformed, or
    when two different binaries map to one target (pick one build with `build_ids`).
    """
    p = Path(path)
    name = str(path)
    text = read_text(path, missing="no such file (run `goreleaser build` or `goreleaser release` first; it "
                                "writes dist/artifacts.json)")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"not valid JSON: {e.msg}", file=name, line=e.lineno) from None
    if not isinstance(data, list):
        raise ConfigError("not a goreleaser artifacts.json (a JSON list of artifacts)", file=name)
    # paths in it are relative to where goreleaser ran: the parent of its dist directory
    project = p.resolve().parent.parent
    out: list[tuple[str, Path]] = []
    owner: dict[str, tuple[str, Path]] = {}
    for i, art in enumerate(data):
        if not isinstance(art, dict) or art.get("type") != BINARY_TYPE:
            continue
        if art.get("internal_type", BUILD_OUTPUT) != BUILD_OUTPUT:
            continue        # the upload copy of a binary listed (as internal_type 4) already
        where = f"{name}: artifact {i} ({art.get('path') or art.get('name')})"
        ident = str((art.get("extra") or {}).get("ID") or "")
        if build_ids is not None and ident not in build_ids:
            continue
        if not art.get("path"):
            raise ConfigError("a Binary artifact has no path", file=where)
        spec = target_spec(art, where)
        if spec is None:
            if skipped is not None:
                skipped.append(f"{art['path']}: xarch has no target {art.get('goos')}/{art.get('goarch')}")
            continue
        artifact = (project / str(art["path"])).resolve()
        if spec in owner:
            other_id, other = owner[spec]
            if other == artifact:
                continue
            raise ConfigError(
                f"two binaries are both {spec}: {other} (build id '{other_id}') and {artifact} (build id "
                f"'{ident}'); a target is one binary, so choose one goreleaser build id", file=name)
        owner[spec] = (ident, artifact)
        out.append((spec, artifact))
    return out
