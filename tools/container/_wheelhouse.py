"""The wheelhouse: every wheel the image installs, prepared on the host.

``pip install`` inside an image build often cannot reach the package index
(the build has no network, or lacks the host's index settings and CA bundle),
so the image installs with ``--no-index`` from a directory the host fills:

1. wanfed's own packages, built from this checkout (``pip wheel --no-deps``);
2. pure-Python dependencies that exist only as source distributions, built
   into ``py3-none-any`` wheels on the host (valid on any target);
3. every remaining dependency downloaded as a binary wheel for the *image's*
   interpreter and platform (CPython 3.11 on manylinux x86_64 by default), so
   the host's own Python version does not leak into the image.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ._engine import ContainerError

__all__ = ["WORKSPACE_PACKAGES", "TargetPython", "build_wheelhouse", "dependency_key"]

WORKSPACE_PACKAGES = (
    "packages/wanfed-proto",
    "packages/wanfed-fsm",
    "packages/wanfed-gateway-locator",
    "packages/wanfed-replication",
    "packages/wanfed-agent",
    "services/server",
)
TOP_LEVEL = "wanfed-server"
COMPLETE = ".complete"


@dataclass(frozen=True, slots=True)
class TargetPython:
    """The interpreter and platform the image runs (its base image decides)."""

    version: str = "3.11"
    platforms: tuple[str, ...] = (
        "manylinux2014_x86_64",
        "manylinux_2_17_x86_64",
        "manylinux_2_28_x86_64",
    )

    def pip_args(self) -> list[str]:
        abi = "cp" + self.version.replace(".", "")
        args = ["--python-version", self.version, "--implementation", "cp", "--abi", abi]
        args += ["--abi", "abi3", "--abi", "none"]
        for platform in self.platforms:
            args += ["--platform", platform]
        return args


def _pip(args: Sequence[str], what: str, python: str) -> None:
    argv = [python, "-m", "pip", "--disable-pip-version-check", *args]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise ContainerError(
            f"{what} failed (pip exited {done.returncode}):\n{done.stderr[-3000:]}"
        )


def build_wheelhouse(
    root: Path,
    wheelhouse: Path,
    target: TargetPython,
    say: Callable[[str], None],
    python: str = sys.executable,
    cache: Path | None = None,
) -> list[str]:
    """Fill ``wheelhouse`` (emptied first) and return the wheel file names.

    With ``cache``, the dependency wheels are kept there under a key made of
    the declared dependencies and the target, so the next build with the same
    key skips resolving and downloading (wanfed's own wheels are always rebuilt).
    """
    if wheelhouse.exists():
        shutil.rmtree(wheelhouse)
    wheelhouse.mkdir(parents=True)
    started = time.monotonic()
    say(f"wheelhouse: building wanfed's {len(WORKSPACE_PACKAGES)} packages from the checkout")
    # With the build backend already installed, skipping build isolation saves
    # one throwaway environment per package (seconds instead of half a minute).
    has_backend = subprocess.run([python, "-c", "import hatchling"], capture_output=True)
    isolation = ["--no-build-isolation"] if has_backend.returncode == 0 else []
    _pip(
        ["wheel", "--quiet", "--no-deps", *isolation, "--wheel-dir", str(wheelhouse)]
        + [str(root / package) for package in WORKSPACE_PACKAGES],
        "building wanfed's wheels",
        python,
    )
    cached = None if cache is None else cache / dependency_key(root, target)
    if cached is not None and (cached / COMPLETE).exists():
        for wheel in sorted(cached.glob("*.whl")):
            shutil.copy2(wheel, wheelhouse / wheel.name)
        say(f"wheelhouse: dependency wheels from the cache {cached}")
    else:
        _add_dependencies(wheelhouse, target, say, python, started)
        if cached is not None:
            cached.mkdir(parents=True, exist_ok=True)
            for wheel in wheelhouse.glob("*.whl"):
                if not wheel.name.startswith("wanfed_"):
                    shutil.copy2(wheel, cached / wheel.name)
            (cached / COMPLETE).touch()
    names = sorted(path.name for path in wheelhouse.glob("*.whl"))
    say(f"wheelhouse: {len(names)} wheels ready in {time.monotonic() - started:.0f} s")
    return names


def dependency_key(root: Path, target: TargetPython) -> str:
    """A hash of every declared dependency of the workspace and of the target."""
    declared: list[str] = []
    for package in WORKSPACE_PACKAGES:
        with (root / package / "pyproject.toml").open("rb") as f:
            declared += tomllib.load(f)["project"].get("dependencies", [])
    text = "\n".join([target.version, *target.platforms, *sorted(set(declared))])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _add_dependencies(
    wheelhouse: Path,
    target: TargetPython,
    say: Callable[[str], None],
    python: str,
    started: float,
) -> None:
    say(f"wheelhouse: resolving dependencies on the host ({time.monotonic() - started:.0f} s)")
    with tempfile.TemporaryDirectory(prefix="wanfed-host-wheels-") as tmp:
        _pip(
            [
                *("wheel", "--quiet", "--prefer-binary", "--wheel-dir", tmp),
                *("--find-links", str(wheelhouse), TOP_LEVEL),
            ],
            "building the dependency closure on the host",
            python,
        )
        for wheel in sorted(Path(tmp).glob("*-py3-none-any.whl")):
            if not (wheelhouse / wheel.name).exists():
                shutil.copy2(wheel, wheelhouse / wheel.name)
    say(
        f"wheelhouse: downloading binary wheels for CPython {target.version} "
        f"({time.monotonic() - started:.0f} s)"
    )
    _pip(
        [
            *("download", "--quiet", "--only-binary", ":all:", "--dest", str(wheelhouse)),
            *target.pip_args(),
            *("--find-links", str(wheelhouse), TOP_LEVEL),
        ],
        f"downloading wheels for CPython {target.version}",
        python,
    )
