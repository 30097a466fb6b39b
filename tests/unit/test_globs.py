"""expand.glob_match: the one rule of --only, exclude, xfail and @pytest.mark.xarch (issue 18, point 3)."""

from __future__ import annotations

import fnmatch

from hypothesis import given
from hypothesis import strategies as st

from xarch import platforms
from xarch.expand import glob_match

TARGETS = sorted({f"linux/{a}" for a in platforms.ARCHES}
                 | {f"linux/{a}/{lv}" for a, facts in platforms.ARCHES.items() for lv in facts.levels})


def test_arm_star_is_arm_with_any_variant_never_arm64() -> None:
    took = [t for t in TARGETS if glob_match("target", t, "linux/arm*")]
    assert "linux/arm" in took and "linux/arm/v6" in took and "linux/arm/v7" in took
    assert all(t == "linux/arm" or t.startswith("linux/arm/") for t in took)
    assert [t for t in TARGETS if glob_match("target", t, "linux/arm64*")] == \
        [t for t in TARGETS if t == "linux/arm64" or t.startswith("linux/arm64/")]


def test_segments_and_exact_names() -> None:
    assert glob_match("target", "linux/amd64/v3", "linux/*")
    assert glob_match("target", "linux/amd64", "linux/*64") and not glob_match("target", "linux/amd64/v3", "linux/*64")
    assert glob_match("target", "linux/arm", "linux/arm") and not glob_match("target", "linux/arm/v6", "linux/arm")
    assert glob_match("target", "linux/arm/v6", "linux/arm/*") and not glob_match("target", "linux/arm", "linux/arm/*")
    assert glob_match("target", "linux/arm/v6", "*/arm/v?") and not glob_match("target", "windows/arm64", "linux/*")


@given(st.sampled_from(TARGETS))
def test_a_target_matches_itself_and_a_trailing_star_after_its_arch(t: str) -> None:
    os_, arch = t.split("/")[:2]
    assert glob_match("target", t, t)
    assert glob_match("target", t, f"{os_}/{arch}*")
    assert not glob_match("target", t, f"{os_}/{arch}x*")


@given(st.text(alphabet="ab-:*?", max_size=8), st.text(alphabet="ab-:", max_size=8))
def test_images_and_profiles_are_plain_shell_globs(pattern: str, value: str) -> None:
    assert glob_match("image", value, pattern) == fnmatch.fnmatchcase(value, pattern)
    assert glob_match("profile", value, pattern) == fnmatch.fnmatchcase(value, pattern)
