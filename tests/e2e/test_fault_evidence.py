"""Issue 13, first case, end to end: the faulting instruction, not the Go level, decides the verdict."""

from __future__ import annotations

import pytest

from conftest import FIXTURES

pytestmark = pytest.mark.e2e


def test_go_assembly_using_avx2_on_westmere_is_unsupported_cpu_naming_the_instruction(xrun_matrix):
    r = xrun_matrix(f"""
        name: avxasm
        project: {FIXTURES / 'avxasm'}
        targets: [linux/amd64]
        profiles: [{{name: westmere-vm, cpu: {{amd64: Westmere}}}}, baseline]
        run: {{args: [], expect: {{stdout: "^avxasm ok"}}}}
    """)
    cell = r.cell("linux/amd64:scratch:westmere-vm")
    assert cell["verdict"] == "unsupported-cpu", cell["explanation"]
    assert "'vpxor ymm0, ymm0, ymm0' (AVX2) in main.useAVX" in cell["explanation"]
    assert "avx_amd64.s:" in cell["explanation"] and "hand-written Go assembly" in cell["explanation"]
    assert "golang.org/x/sys/cpu" in cell["fix"]
