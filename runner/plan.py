"""The plan is data: frozen records made once from the matrix, read by every later stage."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import platforms
from .profiles.machine import Resolved

REPRO_OUTPUT = "@XARCH_REPRO_OUTPUT@"   # a build command's output for the reproducibility rebuild


@dataclass(frozen=True)
class Target:
    """One os/arch[/variant] as written in the matrix, with its per-target overrides."""

    spec: str                   # as written: "linux/arm/v6"
    os: str
    arch: str
    variant: str | None
    env: Mapping[str, str] = field(default_factory=dict)
    cc: str | None = None
    line: int | None = None
    libc: str | None = None     # with cc: zig: "musl" (static, the default) or "gnu.2.17"-style
    artifact: Path | None = None    # a prebuilt binary (targets[].artifact): checked and run, not built

    @property
    def facts(self) -> platforms.Arch:
        return platforms.arch(self.arch)

    @property
    def level(self) -> str | None:
        """The Go level this target is built for (the variant, or Go's default)."""
        return self.variant or self.facts.default_level

    @property
    def runnable(self) -> bool:
        return platforms.OSES[self.os].runs(self.arch)


@dataclass(frozen=True)
class Profile:
    """A CPU profile: builtin (baseline, host, hardware) or custom {arch: model}."""

    name: str
    cpu: Mapping[str, str] = field(default_factory=dict)
    builtin: bool = False
    # a real machine's CPU per arch (a captured /proc/cpuinfo or the catalogue: runner/profiles/), whose
    # features, not the model's, decide what the binary may use; its `cpu` is the resolved -cpu string
    machine: Mapping[str, Resolved] = field(default_factory=dict, compare=False)
    source: str | None = None           # where the machine came from ("fleet/db-vm.txt", "catalogue")

    @classmethod
    def of_machine(cls, name: str, machine: Mapping[str, Resolved], source: str, builtin: bool = False) -> Profile:
        """The profile of a real machine: per arch, its resolved -cpu string (runner/profiles/)."""
        return cls(name, {a: r.cpu for a, r in machine.items()}, builtin=builtin, machine=machine, source=source)

    def model_for(self, target: Target) -> str | None:
        """The qemu model for this target; "" means native (host); None: the profile skips it."""
        if self.name == "baseline" and self.builtin:
            return target.facts.baseline_model(target.level)
        if self.name == "host" and self.builtin:
            return "" if target.arch == platforms.host_goarch() else None
        return self.cpu.get(target.arch)


def builtin_profile(name: str) -> Profile:
    """baseline, host, a catalogue machine (pi-zero, graviton3, ...) or a generic hardware profile by
    name (KeyError when unknown)."""
    if name in ("baseline", "host"):
        return Profile(name, builtin=True)
    from .profiles import CATALOGUE, resolved_catalogue
    if name in CATALOGUE:
        return Profile.of_machine(name, resolved_catalogue(name), "catalogue", builtin=True)
    return Profile(name, dict(platforms.HARDWARE_PROFILES[name].cpu), builtin=True)


@dataclass(frozen=True)
class Expect:
    exit: int = 0
    stdout: str | None = None


@dataclass(frozen=True, kw_only=True)
class Limits:
    """What one cell may use, the same in both engines (run.limits): bytes, processes+threads, bytes."""

    memory: int = 2 << 30
    pids: int = 4096
    output: int = 64 << 20      # stdout + stderr together; the cell is stopped past it

    def describe(self) -> str:
        return f"memory {size_text(self.memory)}, pids {self.pids}, output {size_text(self.output)}"


def size_text(n: int) -> str:
    """2147483648 -> '2 GiB' (whole units when exact), for messages about limits."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            v = n / (1 << shift)
            return f"{v:.0f} {unit}" if n % (1 << shift) == 0 else f"{v:.1f} {unit}"
    return f"{n} B"


@dataclass(frozen=True)
class RunSpec:
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    stdin: str | bytes | None = None    # run.stdin's text, or run.stdin_file's bytes (read when the matrix loads)
    timeout: float = 60.0
    expect: Expect = Expect()
    limits: Limits = Limits()


@dataclass(frozen=True)
class BuildJob:
    """One build: the rendered command and env for one target."""

    target: Target
    argv: tuple[str, ...]           # or a single shell string when shell is true
    shell: bool
    env: Mapping[str, str]          # only what xrun sets on top of the inherited environment
    before: tuple[tuple[str, ...], ...]
    output: Path                    # absolute
    output_rel: str
    cwd: Path
    reproducible: bool
    # the command rendered with the output inside a copy of the project (build.reproducible)
    repro_argv: tuple[str, ...] = ()
    prebuilt: bool = False      # the artifact comes from elsewhere (goreleaser): check and run it only
    matrix_dir: Path | None = None  # where matrix.yaml is: a fix that names `project:` is relative to it


@dataclass(frozen=True)
class Cell:
    """One target x image x profile, with its canonical id."""

    target: Target
    image: str
    profile: Profile
    cpu: str                        # qemu model; "" for native
    args: tuple[str, ...]
    env: Mapping[str, str]
    xfail: str | None = None        # the verdict this cell must produce

    @property
    def id(self) -> str:
        return cell_id(self.target.spec, self.image, self.profile.name)

    @property
    def image_base(self) -> str:
        """The image whose files the cell runs: a form (`distroless-static:nonroot`) runs its image's."""
        return self.image.partition(":")[0]

    @property
    def machine(self) -> Resolved | None:
        """The profile's machine for this cell's arch (a profiles.Resolved), or None for a plain model."""
        return self.profile.machine.get(self.target.arch)


def cell_id(target: str, image: str, profile: str) -> str:
    """The canonical cell id, used for --only, pytest ids, JUnit, logs and labels."""
    return f"{target}:{image}:{profile}"


@dataclass(frozen=True)
class ImageSource:
    """An image from elsewhere (`images: [{name, from}]`): contract §7."""

    name: str
    kind: str                   # docker-archive | oci | oci-archive | docker | dir | tar
    location: str               # an absolute path, or the image reference for docker:
    text: str                   # the `from` value as written
    line: int | None = None

    @property
    def path(self) -> Path:
        return Path(self.location)


@dataclass(frozen=True)
class Plan:
    """Everything to do, in order."""

    matrix_path: Path
    name: str
    project: Path
    builds: tuple[BuildJob, ...]
    cells: tuple[Cell, ...]
    run: RunSpec
    target_lines: Mapping[str, int] = field(default_factory=dict)
    image_sources: Mapping[str, ImageSource] = field(default_factory=dict)
    notes: tuple[str, ...] = ()     # what the plan left out and why (e.g. a platform an image lacks)
