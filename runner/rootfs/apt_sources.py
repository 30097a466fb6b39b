"""The host's apt configuration: which Debian mirrors and suites images are rebuilt from.

Images come from the mirrors the host already uses (its proxy, its keys), moved to another suite when
the host's lacks an arch. Nothing here touches the network.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from debian import deb822

from .. import proc
from ..proc import Result

# Release order; an arch the host suite lacks is looked for in newer ones.
DEBIAN_CODENAMES: tuple[str, ...] = ("buster", "bullseye", "bookworm", "trixie", "forky")


@dataclass(frozen=True)
class AptSource:
    """One (URI, suite) of the host's apt configuration."""

    uri: str
    suite: str
    components: tuple[str, ...]
    signed_by: str | None = None


def apt_env() -> dict[str, str]:
    """The environment apt runs in: its messages are parsed, so keep them untranslated."""
    env = dict(os.environ)
    env["LC_ALL"] = "C"
    env.pop("LANGUAGE", None)
    return env


def run_apt_tool(argv: list[str], *, cwd: Path | None = None, timeout: float | None = None) -> Result | None:
    """Run an apt tool through proc.run (so Ctrl-C kills it); None when it is not installed."""
    exe = shutil.which(argv[0])
    if exe is None:
        return None
    return proc.run([exe, *argv[1:]], env=apt_env(), cwd=str(cwd) if cwd is not None else None,
                    timeout=timeout, tail_bytes=_APT_OUTPUT)


# apt-cache show prints every field of every package asked for; keep all of it.
_APT_OUTPUT = 16 * 1024 * 1024


def _split_options(text: str) -> dict[str, str]:
    opts: dict[str, str] = {}
    for part in text.split():
        k, sep, v = part.partition("=")
        if sep:
            opts[k.rstrip("+-").lower()] = v
    return opts


def parse_one_line_sources(text: str) -> list[AptSource]:
    """Parse ``sources.list`` lines (``deb [opts] uri suite comp...``)."""
    out: list[AptSource] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        m = re.match(r"^deb\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)\s*(.*)$", line)
        if not m:
            continue
        opts = _split_options(m.group(1) or "")
        out.append(
            AptSource(
                uri=m.group(2),
                suite=m.group(3),
                components=tuple(m.group(4).split()),
                signed_by=opts.get("signed-by"),
            )
        )
    return out



def deb822_paragraphs(text: str) -> list[deb822.Deb822]:
    """The paragraphs of deb822 text (sources files, ``apt-cache show``); field names ignore case."""
    return list(deb822.Deb822.iter_paragraphs(text.splitlines(), use_apt_pkg=False))


def _unfold(value: str) -> str:
    """A multi-line field's value as lines: the leading space dropped, a lone ``.`` an empty line."""
    first, *rest = value.split("\n")
    return "\n".join([first.strip(), *("" if ln[1:].strip() == "." else ln[1:] for ln in rest)])


def parse_deb822_sources(text: str) -> list[AptSource]:
    """Parse a deb822 ``*.sources`` file (Types/URIs/Suites/Components/Signed-By)."""
    out: list[AptSource] = []
    for para in deb822_paragraphs(text):
        if "deb" not in para.get("Types", "").split():
            continue
        if para.get("Enabled", "yes").strip().lower() == "no":
            continue
        # An inline key block (a multi-line value) stays a key block; a path stays a path.
        signed = _unfold(para.get("Signed-By", "")).strip() or None
        for uri in para.get("URIs", "").split():
            for suite in para.get("Suites", "").split():
                out.append(
                    AptSource(
                        uri=uri,
                        suite=suite,
                        components=tuple(para.get("Components", "").split()),
                        signed_by=signed,
                    )
                )
    return out


def _apt_config_paths() -> tuple[Path, Path]:
    """The host's sources.list file and sources.list.d directory."""
    default = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))
    try:
        r = run_apt_tool(["apt-config", "shell", "SL", "Dir::Etc::sourcelist/f", "SP", "Dir::Etc::sourceparts/d"],
                         timeout=30)
    except OSError:
        return default
    if r is None or r.returncode != 0:
        return default
    values: dict[str, str] = {}
    for line in r.stdout.splitlines():
        k, _, v = line.partition("=")
        parts = shlex.split(v)
        if parts:
            values[k] = parts[0]
    return (
        Path(values.get("SL", str(default[0]))),
        Path(values.get("SP", str(default[1]))),
    )


def host_apt_sources() -> list[AptSource]:
    """All ``deb`` entries of the host's apt configuration, in apt's order."""
    source_list, parts = _apt_config_paths()
    out: list[AptSource] = []
    if source_list.is_file():
        out += parse_one_line_sources(source_list.read_text(encoding="utf-8", errors="replace"))
    if parts.is_dir():
        for p in sorted(parts.iterdir()):
            # apt itself only reads these two suffixes; others are disabled copies.
            if p.suffix == ".list":
                out += parse_one_line_sources(p.read_text(encoding="utf-8", errors="replace"))
            elif p.suffix == ".sources":
                out += parse_deb822_sources(p.read_text(encoding="utf-8", errors="replace"))
    return out


def _os_codename() -> str | None:
    for p in (Path("/etc/os-release"), Path("/usr/lib/os-release")):
        try:
            text = p.read_text(encoding="utf-8")
        except OSError:
            continue
        m = re.search(r"^VERSION_CODENAME=\"?([a-z]+)\"?$", text, re.M)
        if m:
            return m.group(1)
    return None


def host_suite(sources: list[AptSource]) -> str | None:
    """The host's base suite: the os-release codename if apt uses it, else the first."""
    bases = [s.suite.split("-", 1)[0] for s in sources if not s.suite.endswith("/")]
    codename = _os_codename()
    if codename and codename in bases:
        return codename
    return bases[0] if bases else None


def sources_for_suite(sources: list[AptSource], host: str, suite: str) -> list[AptSource]:
    """The host entries of suite ``host`` (and host-updates, ...) moved to ``suite``."""
    out: list[AptSource] = []
    for s in sources:
        if s.suite == host:
            new = suite
        elif s.suite.startswith(host + "-"):
            new = suite + s.suite[len(host) :]
        else:
            # Third-party repositories name other suites; they are not Debian.
            continue
        entry = AptSource(s.uri, new, s.components, s.signed_by)
        if entry not in out:
            out.append(entry)
    return out

