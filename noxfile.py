"""Automation for wanfed: ``nox -s tests``, ``nox -s lint``, ``nox -s bench -- NAME``.

Every session installs the workspace packages from this checkout, so a clean
clone needs nothing but nox (and, optionally, uv for faster environments).
"""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True

ROOT = Path(__file__).parent
PACKAGES = [
    "packages/wanfed-proto",
    "packages/wanfed-fsm",
    "packages/wanfed-gateway-locator",
    "packages/wanfed-replication",
    "packages/wanfed-agent",
    "services/server",
]
IMPORT_NAMES = [
    "wanfed_proto",
    "wanfed_fsm",
    "wanfed_gateway_locator",
    "wanfed_replication",
    "wanfed_agent",
    "wanfed_server",
]
TEST_DEPS = [
    "pytest>=8",
    "pytest-xdist>=3.5",
    "pytest-asyncio>=0.23",
    "hypothesis>=6.100",
    "cryptography>=42",
    "py-consul>=1.5",
]
BENCHMARKS = sorted(p.stem for p in (ROOT / "tools" / "bench").glob("*.py") if p.stem[0] != "_")


def _install_workspace(session: nox.Session, *extra: str) -> None:
    args: list[str] = []
    for package in PACKAGES:
        args += ["-e", package]
    session.install(*args, *extra)


@nox.session
def tests(session: nox.Session) -> None:
    """Every package's unit tests plus the cross-package tests, in parallel."""
    _install_workspace(session, *TEST_DEPS)
    session.run("pytest", "-n", "2", "-q", "-m", "not interop", *session.posargs)


INTEROP_APT_PACKAGES = ["golang-go", "golang-github-hashicorp-memberlist-dev"]


@nox.session
def interop(session: nox.Session) -> None:
    """Tests against other implementations (a Go hashicorp/memberlist peer built offline)."""
    import os
    import shutil

    memberlist_src = Path("/usr/share/gocode/src/github.com/hashicorp/memberlist")
    if shutil.which("go") is None or not memberlist_src.is_dir():
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        session.run(*sudo, "apt-get", "update", external=True)
        session.run(*sudo, "apt-get", "install", "-y", *INTEROP_APT_PACKAGES, external=True)
    _install_workspace(session, *TEST_DEPS)
    session.run("pytest", "-q", "-m", "interop", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint and format) and mypy strict over sources, tests and tools."""
    _install_workspace(session, *TEST_DEPS, "ruff>=0.6", "mypy>=1.10", "nox")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    mypy_packages = [arg for name in IMPORT_NAMES for arg in ("-p", name)]
    session.run("mypy", *mypy_packages)
    # Test folders are checked one at a time: each is its own namespace of
    # top-level modules (pytest imports them with importlib), so checking them
    # together would report clashes between same-named test files.
    for tests_dir in sorted([*ROOT.glob("packages/*/tests"), ROOT / "services/server/tests"]):
        if any(tests_dir.glob("*.py")):
            session.run("mypy", str(tests_dir.relative_to(ROOT)))
    if any((ROOT / "tests").glob("**/*.py")):
        session.run("mypy", "tests")
    session.run("mypy", "noxfile.py", "tools")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks with same-run baselines: ``nox -s bench -- proto`` (default: all)."""
    _install_workspace(session, "cryptography>=42")
    names = session.posargs or BENCHMARKS
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        session.error(f"unknown benchmark(s) {unknown}; available: {BENCHMARKS}")
    for name in names:
        session.run("python", f"tools/bench/{name}.py")
