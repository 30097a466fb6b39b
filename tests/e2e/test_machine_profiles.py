"""Issue 16 end to end: profiles from real machines. A captured /proc/cpuinfo, a `cpu:` with feature
toggles and every catalogue machine give the verdicts of that machine, from real binaries under the
real emulator."""

from __future__ import annotations

import pytest

from conftest import FIXTURES, run_xrun

pytestmark = pytest.mark.e2e

CPUINFO = FIXTURES / "cpuinfo"


def test_a_captured_vm_without_avx2_refuses_v3_and_avx2_asm_and_runs_v2(xrun_matrix):
    r = xrun_matrix(f"""
        name: dbvm
        targets: [linux/amd64/v2, linux/amd64/v3]
        profiles: [{{name: db-vm, cpuinfo: {CPUINFO / 'db-vm.txt'}}}]
        run: {{args: []}}
    """)
    v2, v3 = r.cell("linux/amd64/v2:scratch:db-vm"), r.cell("linux/amd64/v3:scratch:db-vm")
    assert v2["verdict"] == "ok", v2
    assert v3["verdict"] == "unsupported-cpu", v3
    # Ivy Bridge with AVX and F16C but none of v3's AVX2/BMI/FMA: the fix names the machine
    assert "db-vm has no AVX2, BMI1, BMI2, FMA, LZCNT, MOVBE" in v3["fix"], v3["fix"]
    assert "linux/amd64/v2 (GOAMD64=v2)" in v3["fix"]
    m = v3["evidence"]["machine"]
    assert m["profile"] == "db-vm" and m["cpu"] == "IvyBridge" and "AVX" in m["features"] and "AVX2" not in m["features"]
    assert m["source"].endswith("db-vm.txt")

    a = xrun_matrix(f"""
        name: avxasm
        project: {FIXTURES / 'avxasm'}
        targets: [linux/amd64]
        profiles: [{{name: db-vm, cpuinfo: {CPUINFO / 'db-vm.txt'}}}]
        run: {{args: [], expect: {{stdout: "^avxasm ok"}}}}
    """)
    c = a.cell("linux/amd64:scratch:db-vm")
    assert c["verdict"] == "unsupported-cpu", c
    assert c["evidence"]["fault"]["extension"] == "AVX2" and c["evidence"]["fault"]["model_has_extension"] is False


def test_feature_toggles_bring_what_they_need_and_take_what_needs_them(xrun_matrix):
    r = xrun_matrix(f"""
        name: toggles
        project: {FIXTURES / 'avxasm'}
        targets: [linux/amd64]
        profiles:
          - {{name: westmere, cpu: {{amd64: Westmere}}}}
          - {{name: westmere-avx2, cpu: {{amd64: "Westmere,+avx2"}}}}
          - {{name: haswell-no-avx, cpu: {{amd64: "Haswell,-avx"}}}}
        run: {{args: [], expect: {{stdout: "^avxasm ok"}}}}
    """)
    assert r.cell("linux/amd64:scratch:westmere")["verdict"] == "unsupported-cpu"
    plus = r.cell("linux/amd64:scratch:westmere-avx2")
    # +avx2 alone would give AVX2 without the AVX and XSAVE it needs: xarch adds them
    assert plus["verdict"] == "ok", plus
    assert plus["cpu"] == "Westmere,+xsave,+avx,+avx2", plus["cpu"]
    assert any("+AVX2 needs XSAVE, AVX: added" in n for n in plus["evidence"]["machine"]["notes"])
    minus = r.cell("linux/amd64:scratch:haswell-no-avx")
    assert minus["verdict"] == "unsupported-cpu", minus      # -avx took AVX2 with it
    assert minus["cpu"] == "Haswell,-fma,-f16c,-avx2,-avx"


def test_an_arm64_capture_without_atomics_refuses_v8_1(xrun_matrix):
    r = xrun_matrix(f"""
        name: edge
        targets: [linux/arm64/v8.0, linux/arm64/v8.1]
        profiles: [{{name: edge-box, cpuinfo: {CPUINFO / 'edge-a72.txt'}}}]
        run: {{args: []}}
    """)
    assert r.cell("linux/arm64/v8.0:scratch:edge-box")["verdict"] == "ok"
    c = r.cell("linux/arm64/v8.1:scratch:edge-box")
    assert c["verdict"] == "unsupported-cpu", c
    assert c["cpu"] == "cortex-a72" and "edge-box has no LSE, RDM" in c["fix"], c["fix"]


@pytest.mark.parametrize(("file", "want"), [
    ("avx2-without-avx.txt", "avx2-without-avx.txt:4: flags: lists AVX2 without AVX"),
    ("not-cpuinfo.txt", "not-cpuinfo.txt: not a /proc/cpuinfo"),
    ("no-such-file.txt", "no-such-file.txt: cannot read the cpuinfo file"),
])
def test_a_bad_cpuinfo_is_exit_2_naming_the_file_and_line(xrun_matrix, file, want):
    r = xrun_matrix(f"""
        name: bad
        targets: [linux/amd64]
        profiles: [{{name: m, cpuinfo: {CPUINFO / file}}}]
    """)
    assert r.rc == 2, r.out
    assert "profiles[0].cpuinfo" in r.err and want in r.err, r.err
    assert "Traceback" not in r.err


def test_profile_capture_and_show(tmp_path):
    src = CPUINFO / "db-vm.txt"
    p = run_xrun(["profile", "capture", "--name", "db-vm", "--out", str(tmp_path / "fleet"), "--from", str(src)])
    assert p.returncode == 0, p.stderr
    written = tmp_path / "fleet" / "db-vm.cpuinfo"
    assert f"- {{name: db-vm, cpuinfo: {written}}}" in p.stdout
    text = written.read_text()
    assert text.count("processor\t:") == 1 and "avx f16c" in text     # the first CPU only
    s = run_xrun(["profile", "show", str(written)])
    assert s.returncode == 0, s.stderr
    assert "amd64: qemu-x86_64-static -cpu IvyBridge,check=off PROGRAM" in s.stdout
    assert "Go level to build for: v2" in s.stdout
    g = run_xrun(["profile", "show", "graviton3"])
    assert "arm64: qemu-aarch64-static -cpu a64fx PROGRAM" in g.stdout and "not emulated: BF16" in g.stdout


def _catalogue_cases() -> list[tuple[str, str, str, tuple[str, str] | None]]:
    from xarch.profiles import CATALOGUE

    return [(name, arch, runs, up) for name, e in CATALOGUE.items() for arch, (runs, up) in e.levels.items()]


_TARGET = {"amd64": "linux/amd64/{}", "arm64": "linux/arm64/{}", "arm": "linux/arm/{}", "ppc64le": "linux/ppc64le/{}",
           "riscv64": "linux/riscv64/{}", "s390x": "linux/s390x"}


def test_every_catalogue_machine_runs_its_level_and_not_the_next(xrun_matrix):
    """One matrix of every catalogue profile: its level's cell is ok, the level above gets the claimed verdict."""
    from xarch.plan import builtin_profile
    from xarch.profiles.machine import machine_level

    cases = _catalogue_cases()
    targets = sorted({_TARGET[a].format(lvl) for _, a, runs, up in cases for lvl in (runs, *(up[:1] if up else ()))})
    names = sorted({n for n, *_ in cases})
    r = xrun_matrix(f"""
        name: catalogue
        targets: [{", ".join(targets)}]
        profiles: [{", ".join(names)}]
        run: {{args: []}}
    """)
    bad = []
    for name, arch, runs, up in cases:
        if arch != "s390x":     # the claim is what the machine's features say (a level qemu cannot give is still theirs)
            machine_runs = up[0] if up and up[1] == "emulation-unsupported" else runs
            assert machine_level(builtin_profile(name).machine[arch]) == machine_runs, (name, arch)
        c = r.cell(f"{_TARGET[arch].format(runs)}:scratch:{name}")
        if c["verdict"] != "ok":
            bad.append((name, arch, runs, "ok", c["verdict"], c["explanation"]))
        if up:
            c = r.cell(f"{_TARGET[arch].format(up[0])}:scratch:{name}")
            if c["verdict"] != up[1]:
                bad.append((name, arch, up[0], up[1], c["verdict"], c["explanation"]))
    assert not bad, "\n".join(map(str, bad))
