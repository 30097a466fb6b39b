"""The fix texts a verdict and a prediction share: `xrun explain` predicts what `xrun run` finds, and
must advise the same change (they were two copies, worded differently).
"""

from __future__ import annotations

from collections.abc import Sequence

from .. import platforms


def level_setting(a: platforms.Arch, level: str) -> str:
    """GOARM=6, GOAMD64=v3, ...: the environment setting that builds for a level."""
    return f"{a.level_var}={a.env_value(level)}" if a.level_var else level


def build_for_model(profile: str, model: str, os_: str, a: platforms.Arch, level: str) -> str:
    """The unsupported-cpu fix when the model runs some level: build for that level."""
    return (f"build for what {profile} ({model}) can run: target {os_}/{a.goarch}/{level} "
            f"({level_setting(a, level)})")


def build_for_machine(profile: str, cpu: str, os_: str, a: platforms.Arch, top: str | None,
                      gap: Sequence[str], built: str | None = None) -> str:
    """The unsupported-cpu fix for a real machine (a machine profile): the level it runs, and what it lacks."""
    why = f" ({profile} has no {', '.join(gap)})" if gap else ""
    if top is None:
        return f"{profile} runs no Go {a.goarch} level{why}; drop the {profile} profile for {a.goarch}"
    return (build_for_model(profile, cpu, os_, a, top) + (f" instead of {built}" if built and built != top else "")
            + why)


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


def too_new_for_glibc(symbols: list[tuple[str, str | None]], versions: list[str]) -> str:
    """'strlcpy needs GLIBC_2.38; foo, bar need GLIBC_2.37' (or the versions alone, without symbols)."""
    by_ver: dict[str, list[str]] = {}
    for n, v in symbols:
        by_ver.setdefault(v or "", []).append(n)
    if not by_ver:
        return "it lacks " + ", ".join(dict.fromkeys(versions))
    return "; ".join(f"{', '.join(ns)} need{'s' if len(ns) == 1 else ''} {v}" for v, ns in by_ver.items())


def glibc_fix(spec: str, has: str | None, need: str, symbols: list[str]) -> str:
    """The fix for symbols newer than the image's glibc, for a program that may need C: build against
    the image's glibc (and do without those symbols), or an image with a new enough glibc."""
    avoid = (f" and replace {', '.join(dict.fromkeys(symbols))} (absent before glibc {need})" if symbols else "")
    return (f"build against the image's glibc: `cc: zig` with `libc: gnu.{has or '2.17'}` on the {spec} "
            f"target{avoid}; or run on an image with glibc >= {need}; "
            "or, if the program needs no C, CGO_ENABLED=0 for a static binary")


def musl_fix(spec: str, symbols: list[str]) -> str:
    """The fix for symbols musl could not resolve in a binary built for glibc."""
    return (f"run it on a glibc image (distroless-base), or build it for musl (`cc: zig` with `libc: musl` "
            f"on the {spec} target, without {', '.join(dict.fromkeys(symbols))}); "
            "or, if the program needs no C, CGO_ENABLED=0 for a static binary")


def c_compiler_flag(a: platforms.Arch, level: str | None) -> str | None:
    """The gcc/clang flag that compiles C for the CPUs of a Go level: '-march=x86-64-v2', '-mcpu=power8'."""
    if level is None:
        return None
    if a.goarch == "amd64":
        return "-march=x86-64" if level == "v1" else f"-march=x86-64-{level}"
    if a.goarch == "386":
        return "-march=pentium4" if level == "sse2" else "-march=i486"
    if a.goarch == "arm":
        return {"v5": "-march=armv5te", "v6": "-march=armv6 -mfpu=vfp", "v7": "-march=armv7-a"}.get(level)
    if a.goarch == "arm64":
        return "-march=armv" + level.removeprefix("v") + "-a"
    if a.goarch in ("ppc64", "ppc64le"):
        return f"-mcpu={level}"
    if a.goarch == "riscv64":
        return {"rva20u64": "-march=rv64gc", "rva22u64": "-march=rv64gc_zba_zbb_zbs"}.get(level)
    return None


def broken_pipe_why(expected: int, said: str) -> str:
    """The exit-status explanation for a death by SIGPIPE: output closed early, not a crash."""
    return (f"killed by SIGPIPE (a shell reports status 141), expected exit {expected}: it wrote to a pipe whose "
            "reader had already exited (e.g. `| head` in a shell command, or a pager that quit), and a program "
            f"that does not handle SIGPIPE ends there. Its output was closed early; this is not a crash ({said}).")


BROKEN_PIPE_FIX = ("let the reader take all of the output (`| head -n 3` -> `| sed -n 1,3p`), or, if stopping early is "
                   "intended, make the program ignore the signal (Go: signal.Ignore(syscall.SIGPIPE): the write "
                   "then fails with EPIPE, which it can treat as the end)")
