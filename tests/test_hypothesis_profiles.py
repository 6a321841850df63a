"""The hypothesis profile comes from the root conftest.py and HYPOTHESIS_PROFILE (default ci).

Property tests set only how many examples they want; randomness, deadlines
and the example database come from the profile, so CI explores new examples
on every run instead of replaying a fixed set.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings

ROOT = Path(__file__).resolve().parents[1]


def test_the_chosen_profile_is_loaded() -> None:
    assert settings._current_profile == os.environ.get("HYPOTHESIS_PROFILE", "ci")


@pytest.mark.parametrize("name", ["ci", "dev", "fuzz"])
def test_every_profile_is_randomized_without_deadlines(name: str) -> None:
    profile = settings.get_profile(name)
    assert profile.derandomize is False
    assert profile.deadline is None


def test_ci_writes_nothing_and_prints_reproducers() -> None:
    ci = settings.get_profile("ci")
    assert ci.database is None
    assert ci.print_blob is True
    assert ci.max_examples >= 100
    assert settings.get_profile("fuzz").max_examples > ci.max_examples


def test_a_package_local_run_gets_the_profile_too() -> None:
    """pytest started inside a package folder still loads the root conftest.py."""
    folder = ROOT / "packages" / "wanfed-proto" / "tests"
    probe = folder / "test_zz_profile_probe.py"
    probe.write_text(
        "from hypothesis import settings\n"
        "def test_probe():\n"
        "    assert settings._current_profile == 'dev'\n"
        "    assert settings().max_examples == 30\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", probe.name],
            cwd=folder,
            env={**os.environ, "HYPOTHESIS_PROFILE": "dev"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        probe.unlink()
    assert done.returncode == 0, done.stdout + done.stderr


def test_an_unknown_profile_is_refused_by_name() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import runpy; runpy.run_path('conftest.py')"],
        cwd=ROOT,
        env={**os.environ, "HYPOTHESIS_PROFILE": "nightly"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert "HYPOTHESIS_PROFILE='nightly' is not one of ci, dev, fuzz" in done.stderr
