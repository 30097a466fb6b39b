"""The fix texts a verdict and a prediction share: `xrun explain` predicts what `xrun run` finds, and
must advise the same change (they were two copies, worded differently).
"""

from __future__ import annotations

from .. import platforms


def level_setting(a: platforms.Arch, level: str) -> str:
    """GOARM=6, GOAMD64=v3, ...: the environment setting that builds for a level."""
    return f"{a.level_var}={a.env_value(level)}" if a.level_var else level


def build_for_model(profile: str, model: str, os_: str, a: platforms.Arch, level: str) -> str:
    """The unsupported-cpu fix when the model runs some level: build for that level."""
    return (f"build for what {profile} ({model}) can run: target {os_}/{a.goarch}/{level} "
            f"({level_setting(a, level)})")


def no_level_for_model(profile: str, model: str, a: platforms.Arch) -> str:
    """The unsupported-cpu fix when the model runs no Go level of the arch at all."""
    return f"drop the {profile} profile for {a.goarch}: {model} runs no Go {a.goarch} level"


def loader_fix(interp: str, cgo: bool, pie: bool, images: str) -> str:
    """The missing-loader fix: link statically (how depends on why it is dynamic), or an image that has it."""
    where = f"ship it in an image that has {interp}" + (f": {images}" if images else "")
    if cgo:
        return (f"build with CGO_ENABLED=0 (a static pure-Go binary needs no loader; os/user and the DNS "
                f"resolver then use Go's own code), or {where}")
    if pie:
        return f"drop -buildmode=pie (or link it statically), or {where}"
    return f"link statically, or {where}"
