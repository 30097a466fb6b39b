"""The pure parts of issue 11's hardening: limits, confinement, plain text, CPU models, reports."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
from test_classify import cell, ev, facts, verdict

from xarch import matrix, qemu_cpus
from xarch.engines import Evidence, limits
from xarch.errors import ConfigError
from xarch.model import LimitOutcome
from xarch.output.text import plain, safe
from xarch.plan import Expect, Limits


def load(tmp_path: Path, body: str):
    (tmp_path / "proj").mkdir(exist_ok=True)
    p = tmp_path / "m.yaml"
    p.write_text(textwrap.dedent(body).lstrip("\n"))
    return matrix.load(p, images=["scratch", "alpine"])


def err(tmp_path: Path, body: str) -> str:
    with pytest.raises(ConfigError) as e:
        load(tmp_path, body)
    return str(e.value)


# -- run.limits ------------------------------------------------------------------------------------

def test_limits_default_and_parse(tmp_path):
    plan = load(tmp_path, "name: a\ntargets: [linux/amd64]\n")
    assert plan.run.limits == Limits(memory=2 << 30, pids=4096, output=64 << 20)
    plan = load(tmp_path, """
        name: a
        targets: [linux/amd64]
        run:
          limits: {memory: 512m, pids: 100, output: "1 MiB"}
    """)
    assert plan.run.limits == Limits(memory=512 << 20, pids=100, output=1 << 20)


@pytest.mark.parametrize(("body", "says"), [
    ("memory: lots", "run.limits.memory"),
    ("memory: 1k", "below the least a cell needs (32 MiB)"),
    ("pids: 2", "below the least a cell needs (16)"),
    ("pids: true", "run.limits.pids"),
    ("output: -5", "run.limits.output"),
    ("cpu: 2", "cpu"),
])
def test_bad_limits_name_file_line_and_key(tmp_path, body, says):
    msg = err(tmp_path, f"""
        name: a
        targets: [linux/amd64]
        run:
          limits: {{{body}}}
    """)
    assert "m.yaml:4" in msg and says in msg, msg


def test_parse_size():
    assert matrix.parse_size("2g") == 2 << 30
    assert matrix.parse_size("64KiB") == 64 << 10
    assert matrix.parse_size(4096) == 4096
    assert matrix.parse_size("2.5g") is None
    assert matrix.parse_size(True) is None


# -- cgroup detection ------------------------------------------------------------------------------

def _tree(tmp_path: Path, subtree: str) -> tuple[str, str]:
    root = tmp_path / "cg"
    (root / "user.slice" / "me.scope").mkdir(parents=True)
    (root / "user.slice" / "cgroup.subtree_control").write_text(subtree)
    mi = f"30 25 0:26 / {root} rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
    return mi, "0::/user.slice/me.scope\n"


def test_detect_v2_delegated_parent(tmp_path):
    mi, pc = _tree(tmp_path, "memory pids cpu")
    found = limits.detect(mi, pc, "42")
    assert {k: (c.version, c.base) for k, c in found.items()} == {
        "memory": (2, tmp_path / "cg" / "user.slice" / "xarch-42"),
        "pids": (2, tmp_path / "cg" / "user.slice" / "xarch-42")}


def test_detect_v2_without_delegation_falls_back(tmp_path):
    mi, pc = _tree(tmp_path, "cpu")
    assert limits.detect(mi, pc, "42") == {}


def test_detect_v1_hierarchies(tmp_path):
    mem, pids = tmp_path / "memory" / "job", tmp_path / "pids"
    mem.mkdir(parents=True)
    pids.mkdir()
    mi = (f"40 25 0:30 /job {tmp_path / 'memory' / 'job'} rw - cgroup cgroup rw,memory\n"
          f"41 25 0:31 / {pids} rw - cgroup cgroup rw,pids\n")
    pc = "12:memory:/job\n5:pids:/\n0::/\n"
    found = limits.detect(mi, pc, "7")
    assert found["memory"].version == 1 and found["memory"].base == mem / "xarch-7"
    assert found["pids"].base == pids / "xarch-7"


def test_forced_rlimit_fallback_says_which_limit_held(monkeypatch):
    monkeypatch.setenv("XARCH_LIMITS", "rlimit")
    limits.close()
    try:
        with limits.cell_limits(Limits(memory=64 << 20, pids=32, output=1 << 20)) as lim:
            out = lim.outcome()
    finally:
        limits.close()
    assert out.memory == "64 MiB (RLIMIT_DATA)" and out.mechanism.startswith("rlimit")
    if os.getuid() == 0:
        assert out.pids.startswith("32 (not enforced")
    else:
        assert out.pids == "32 (RLIMIT_NPROC, per user)"


# -- classify: a limit that struck ----------------------------------------------------------------

def _lim(**kw: object) -> LimitOutcome:
    base = {"limits": Limits(memory=256 << 20, pids=64, output=1 << 20), "memory_by": "cgroup v2",
            "pids_by": "cgroup v2", "mechanism": "cgroup v2"}
    return LimitOutcome(**{**base, **kw})  # type: ignore[arg-type]


def test_oom_kill_is_its_own_explanation():
    c = cell("linux/amd64", "qemu64", "baseline")
    v = verdict(c, ev(c, facts("amd64", "GOAMD64", "v1"), signal=9, limits=_lim(oom_killed=True)))
    assert v.verdict == "crashed"
    assert "ran out of memory at its 256 MiB limit (run.limits.memory, enforced by cgroup v2)" in v.explanation
    assert "raise run.limits.memory" in v.fix


def test_sigkill_without_oom_is_not_blamed_on_memory():
    c = cell("linux/amd64", "qemu64", "baseline")
    v = verdict(c, ev(c, facts("amd64", "GOAMD64", "v1"), signal=9, limits=_lim()))
    assert "memory" not in (v.explanation or "")


def test_rlimit_data_out_of_memory():
    c = cell("linux/amd64", "qemu64", "baseline")
    v = verdict(c, ev(c, facts("amd64", "GOAMD64", "v1"), exit_code=2,
                      stderr="fatal error: runtime: out of memory\n",
                      limits=_lim(memory_by="RLIMIT_DATA", mechanism="rlimit")))
    assert "enforced by RLIMIT_DATA" in v.explanation and "runtime: out of memory" in v.explanation


def test_pids_limit_from_counter_and_from_words():
    c = cell("linux/amd64", "", "host")
    v = verdict(c, ev(c, facts("amd64", "GOAMD64", "v1"), exit_code=1, limits=_lim(pids_hit=True)))
    assert "limit of 64 processes" in v.explanation
    docker = _lim(pids_by="docker --pids-limit", mechanism="docker")
    v = verdict(c, ev(c, facts("amd64", "GOAMD64", "v1"), timed_out=True, limits=docker,
                      stderr="fork failed: fork/exec /app: resource temporarily unavailable\n"))
    assert v.verdict == "crashed" and "limit of 64 processes" in v.explanation


def test_a_passing_cell_that_mentions_eagain_stays_ok():
    c = cell("linux/amd64", "", "host")
    v = verdict(c, ev(c, facts("amd64", "GOAMD64", "v1"), exit_code=0, limits=_lim(),
                      stdout="retrying: resource temporarily unavailable\n"))
    assert v.verdict == "ok"


def test_output_limit_and_stdout_tail_evidence():
    c = cell("linux/amd64", "", "host")
    v = verdict(c, ev(c, facts("amd64", "GOAMD64", "v1"), signal=9, output_limited=True, limits=_lim()))
    assert "passed the output limit 1 MiB (run.limits.output)" in v.explanation
    v = verdict(c, ev(c, facts("amd64", "GOAMD64", "v1"), exit_code=3, stdout="error: no config\n"))
    assert "stderr empty; stdout: 'error: no config'" in v.explanation


def test_expect_stdout_is_matched_against_the_whole_output():
    c = cell("linux/amd64", "", "host")
    out = "BEGIN\n" + "x" * 200_000 + "\n"
    v = verdict(c, ev(c, facts("amd64", "GOAMD64", "v1"), exit_code=0, stdout=out), Expect(0, "^BEGIN"))
    assert v.verdict == "ok"


def test_trimmed_evidence_keeps_a_tail_and_says_what_it_dropped():
    c = cell("linux/amd64", "", "host")
    e = ev(c, facts("amd64", "GOAMD64", "v1"), stdout="a" * 100 + "END", stderr="short")
    t = e.trimmed(keep=10)
    assert t.stdout.endswith("aaaaaaaEND") and "[... 93 bytes dropped ...]" in t.stdout
    assert t.stderr == "short"
    assert isinstance(t, Evidence)


# -- confinement ------------------------------------------------------------------------------------

@pytest.mark.parametrize("output", ["/etc/xrun-{{ arch }}", "../../../../tmp/escape-{{ arch }}"])
def test_build_output_outside_the_project_is_refused(tmp_path, output):
    msg = err(tmp_path, f"""
        name: a
        project: proj
        targets: [linux/amd64]
        build:
          output: "{output}"
    """)
    assert "m.yaml:5: build.output" in msg and "writes outside the project" in msg, msg


def test_dist_symlinked_out_of_the_project_is_refused(tmp_path):
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "dist").symlink_to("/tmp")
    msg = err(tmp_path, "name: a\nproject: proj\ntargets: [linux/amd64]\n")
    assert "build.output (default)" in msg and "a symlink on the way" in msg, msg


def test_output_beside_the_matrix_is_allowed(tmp_path):
    plan = load(tmp_path, 'name: a\nproject: proj\ntargets: [linux/amd64]\nbuild: {output: "../out/{{ arch }}"}\n')
    assert plan.builds[0].output == tmp_path / "out" / "amd64"


# -- plain text --------------------------------------------------------------------------------------

def test_plain_makes_control_characters_visible():
    assert plain("a\x1b[2K\rb\x07\n\tc\u202e") == "a\\x1b[2K\\rb\\x07\n\tc\\u202e"
    assert safe("os/arch[/variant] [bold]x[/]") == "os/arch\\[/variant] \\[bold]x\\[/]"


def test_console_prints_brackets_from_an_error_without_a_traceback(tmp_path):
    from conftest import run_xrun

    m = tmp_path / "m.yaml"
    m.write_text("name: a\ntargets: [linux]\n")
    p = run_xrun([str(m), "--list"])
    assert p.returncode == 2, p.stderr
    assert "os/arch[/variant]" in p.stderr and "Traceback" not in p.stderr


# -- CPU models ---------------------------------------------------------------------------------------

def test_parse_cpu_help_formats():
    text = ("Available CPUs:\nx86 486   (alias)\nx86 Haswell-v1\n\nRecognized CPUID flags:\n  avx avx2\n"
            "  cortex-a7\nMIPS '24Kf'\nPowerPC 970fx_v3.1  PVR 003c0301\ns390 z14  IBM z14\nla464-loongarch-cpu\n")
    names = qemu_cpus._parse(text)
    assert {"486", "haswell-v1"} <= names and "avx" not in names
    names = qemu_cpus._parse("  cortex-a7\nMIPS '24Kf'\nPowerPC 970fx_v3.1  PVR 1\ns390 z14  IBM\nla464-loongarch-cpu\n")
    assert names == {"cortex-a7", "24kf", "970fx_v3.1", "z14", "la464-loongarch-cpu"}
    assert qemu_cpus.accepted("la464", names) and qemu_cpus.accepted("Cortex-A7,+neon", names)
    assert qemu_cpus.accepted("max", names) and not qemu_cpus.accepted("cortex-z99", names)


@pytest.mark.skipif(qemu_cpus.models("arm") is None, reason="qemu-arm-static is not installed")
def test_a_cpu_model_typo_fails_at_load_with_the_closest_names(tmp_path, monkeypatch):
    monkeypatch.setenv("XARCH_CACHE_DIR", str(tmp_path / "cache"))
    msg = err(tmp_path, """
        name: a
        targets: [linux/arm/v7]
        profiles:
          - name: pi
            cpu: {arm: cortex-z99}
    """)
    assert "m.yaml:5: profiles[0].cpu.arm" in msg and "no CPU model 'cortex-z99'" in msg, msg
    assert "cortex-a9" in msg
    assert (tmp_path / "cache" / "qemu-cpus.json").is_file()     # asked once, then cached


def test_every_builtin_profile_model_is_known_to_the_installed_qemu():
    from xarch import platforms
    from xarch.plan import builtin_profile
    from xarch.profiles import BUILTIN_PROFILES

    checked = 0
    wanted: set[tuple[str, str]] = set()
    for pname in BUILTIN_PROFILES:     # the catalogue's resolved models with their toggles stripped
        wanted |= {(a, m.split(",")[0]) for a, m in (builtin_profile(pname).cpu or {}).items() if m}
    for goarch, facts_ in platforms.ARCHES.items():
        for level in (None, *facts_.levels):
            m = facts_.baseline_model(level)
            if m:
                wanted.add((goarch, m))
    for goarch, model in sorted(wanted):
        names = qemu_cpus.models(goarch)
        if names is None:
            continue
        checked += 1
        assert qemu_cpus.accepted(model, names), (goarch, model)
    if checked == 0:
        pytest.skip("no qemu-user-static installed")


# -- image integrity ------------------------------------------------------------------------------------

DEMO = """\
name: demo
description: a demo
fidelity: "rebuilt equivalent: nothing"
reference:
  image: demo:1
  digest: null
files:
  /etc/passwd:
    content: "root:x:0:0:root:/root:/sbin/nologin\\n"
"""
ORIGINAL = b"root:x:0:0:root:/root:/sbin/nologin\n"
POISON = b"root::0:0:root:/root:/bin/sh\n#######"[:len(ORIGINAL)]


def _demo_store(tmp_path: Path):
    from xarch.rootfs.store import ImageStore

    defs = tmp_path / "images"
    defs.mkdir()
    (defs / "demo.yaml").write_text(DEMO)
    return ImageStore(tmp_path / "cache", definitions_dir=defs)


def test_a_same_size_change_is_seen_on_use_and_the_image_is_rebuilt(tmp_path):
    store = _demo_store(tmp_path)
    root = store.ensure("demo", "amd64")
    passwd = root / "etc" / "passwd"
    assert passwd.read_bytes() == ORIGINAL and len(POISON) == len(ORIGINAL)
    os.chmod(passwd, 0o644)
    passwd.write_bytes(POISON)        # same size: the old size-only check served this
    assert store.path("demo", "amd64") is None
    again = store.ensure("demo", "amd64")
    assert (again / "etc" / "passwd").read_bytes() == ORIGINAL


def test_images_verify_finds_a_change_that_hid_its_mtime_and_removes_the_image(tmp_path):
    store = _demo_store(tmp_path)
    root = store.ensure("demo", "amd64")
    passwd = root / "etc" / "passwd"
    st = passwd.stat()
    os.chmod(passwd, 0o644)
    passwd.write_bytes(POISON)
    os.utime(passwd, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.chmod(passwd, st.st_mode & 0o7777)
    (root / "etc" / "ld.so.preload").write_text("/tmp/evil.so\n")
    [(img, problems)] = store.verify("demo")
    assert img.name == "demo" and "/etc/passwd: content changed" in problems
    assert "/etc/ld.so.preload: not in the image's manifest" in problems
    assert store.path("demo", "amd64") is None            # never served again
    assert (store.ensure("demo", "amd64") / "etc" / "passwd").read_bytes() == ORIGINAL
    [(_, problems)] = store.verify("demo")
    assert problems == []


# -- interrupted runs ---------------------------------------------------------------------------------

def test_the_partial_report_names_the_unfinished_cells(tmp_path):
    from xarch.classify import Verdict
    from xarch.output import report
    from xarch.pipeline import CellResult, RunResult

    plan = load(tmp_path, "name: a\ntargets: [linux/amd64, linux/arm64]\nimages: [scratch, alpine]\n")
    res = RunResult(plan, "local")
    res.cells.append(CellResult(plan.cells[1], Verdict("ok", None, None), None))
    assert "interrupted" not in report.summary(res)
    res.interrupted = True
    s = report.summary(res)
    assert s["interrupted"] == [c.id for i, c in enumerate(plan.cells) if i != 1]


def test_merge_keeps_the_unfinished_cells_of_every_shard():
    from xarch.merge import merge_reports

    def rep(cells, left):
        return {"version": 1, "interrupted": bool(left), "builds": [],
                "cells": [{"id": c, "target": "linux/amd64", "verdict": "ok", "passed": True} for c in cells],
                "summary": {"planned_cells": len(cells) + len(left), **({"interrupted": left} if left else {})}}
    m = merge_reports([rep(["a"], ["b"]), rep(["c"], ["d", "e"])], names=["1.json", "2.json"])
    assert m["interrupted"] is True and m["summary"]["interrupted"] == ["b", "d", "e"]


# -- the emulator and the cache root ----------------------------------------------------------------

def test_a_modified_or_writable_emulator_is_never_run(tmp_path, monkeypatch):
    from xarch.engines import emulator

    exe = tmp_path / "qemu-x86_64-static"
    exe.write_bytes(b"\x7fELF pretend")
    exe.chmod(0o755)
    assert emulator.verify(str(exe)) == str(exe)          # not a dpkg file: owner and mode only
    emulator._verified.cache_clear()
    monkeypatch.setattr(emulator, "_dpkg_md5s", lambda: {str(exe): ("0" * 32, "qemu-user-static")})
    with pytest.raises(Exception) as e:
        emulator.verify(str(exe))
    assert "modified after installation" in str(e.value) and "--reinstall qemu-user-static" in e.value.fix
    emulator._verified.cache_clear()
    monkeypatch.setattr(emulator, "_dpkg_md5s", dict)
    exe.chmod(0o777)
    with pytest.raises(Exception) as e:
        emulator.verify(str(exe))
    assert "writable by others" in str(e.value)
    emulator._verified.cache_clear()


def test_every_cache_honours_xarch_cache_dir(tmp_path, monkeypatch):
    from xarch import paths
    from xarch.rootfs.store import ImageStore

    monkeypatch.setenv("XARCH_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert paths.cache_dir() == tmp_path / "c"
    assert ImageStore().cache_dir == tmp_path / "c" / "images"
    monkeypatch.delenv("XARCH_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")      # ignored, as the XDG spec says
    assert paths.cache_dir() == Path.home() / ".cache" / "xarch"
