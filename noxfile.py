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
TOOL_PACKAGES = ["tools/topology", "tools/sim"]
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
    for package in [*PACKAGES, *TOOL_PACKAGES]:
        args += ["-e", package]
    session.install(*args, *extra)


@nox.session
def dev(session: nox.Session) -> None:
    """A working local federation on loopback: dc1 (primary) and dc2, servers and gateways.

    ``nox -s dev -- --servers 3`` for three servers per datacenter; Ctrl-C stops it.
    """
    _install_workspace(session)
    session.run("python", "tools/dev/devfed.py", *session.posargs)


@nox.session
def tests(session: nox.Session) -> None:
    """Every package's unit tests plus the cross-package tests, in parallel."""
    _install_workspace(session, *TEST_DEPS)
    session.run(
        "pytest", "-n", "2", "-q", "-m", "not interop and not integration", *session.posargs
    )


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


INTEGRATION_APT_PACKAGES = ["nftables", "iproute2"]


@nox.session
def integration(session: nox.Session) -> None:
    """Multi-datacenter topologies in network namespaces where only gateways can cross."""
    import os
    import shutil

    if os.geteuid() != 0:
        session.error("nox -s integration builds network namespaces and needs root")
    if shutil.which("nft") is None or shutil.which("ip") is None:
        session.run("apt-get", "update", external=True)
        session.run("apt-get", "install", "-y", *INTEGRATION_APT_PACKAGES, external=True)
    _install_workspace(session, *TEST_DEPS)
    session.run("pytest", "-q", "-m", "integration", "tests/integration", *session.posargs)


CONTAINER_APT_PACKAGES = ["podman", "buildah", "runc", "debootstrap"]
CONTAINER_IMAGE = "localhost/wanfed:nox"


@nox.session
def container(session: nox.Session) -> None:
    """Build the server image with podman and smoke-test it; leaves only the cached base image.

    Root only (rootful podman, debootstrap). Containers run with ``--network
    host`` on loopback or ``--network none``, never podman's default bridge.
    """
    import os
    import shutil

    if os.geteuid() != 0:
        session.error("nox -s container runs rootful podman and debootstrap, and needs root")
    if any(shutil.which(tool) is None for tool in ("podman", "runc", "debootstrap")):
        session.run("apt-get", "update", external=True)
        session.run(
            *("apt-get", "install", "-y", "--no-install-recommends"),
            *CONTAINER_APT_PACKAGES,
            external=True,
        )
    session.install("pip", "hatchling", "pytest>=8", "pytest-asyncio>=0.23")
    tool = ["python", "-m", "tools.container"]
    try:
        session.run(*tool, "build", "--tag", CONTAINER_IMAGE)
        session.run(
            *("python", "-m", "pytest", "-v", "tests/container", *session.posargs),
            env={"WANFED_CONTAINER_IMAGE": CONTAINER_IMAGE},
        )
        # The tests must have removed their own containers and volumes.
        session.run(*tool, "check-clean", "--except-image", CONTAINER_IMAGE)
    finally:
        session.run(*tool, "clean")
    session.run(*tool, "check-clean")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint and format) and mypy strict over sources, tests and tools."""
    _install_workspace(session, *TEST_DEPS, "ruff>=0.6", "mypy>=1.10", "nox")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    tool_names = ["wanfed_topology", "wanfed_sim"]
    mypy_packages = [arg for name in [*IMPORT_NAMES, *tool_names] for arg in ("-p", name)]
    session.run("mypy", *mypy_packages)
    # Each folder of tests or scripts is checked on its own: pytest imports test
    # files as separate top-level modules, so checking folders together would
    # report clashes between same-named files (every conftest.py).
    for folder in _python_folders():
        session.run("mypy", *folder)


def _python_folders() -> list[list[str]]:
    roots = [*ROOT.glob("packages/*/tests"), ROOT / "services/server/tests", ROOT / "tests"]
    roots.append(ROOT / "tools")
    folders: list[list[str]] = [["noxfile.py"], ["conftest.py"]]
    for root in sorted(roots):
        for folder in sorted({root, *(p.parent for p in root.rglob("*.py"))}):
            if "src" in folder.relative_to(ROOT).parts:
                continue  # installed packages are checked with -p above
            files = sorted(str(p.relative_to(ROOT)) for p in folder.glob("*.py"))
            if files:
                folders.append(files)
    return folders


@nox.session
def sim(session: nox.Session) -> None:
    """The deterministic multi-datacenter simulator: 1,000 seeded fault schedules by default.

    ``nox -s sim -- --seeds 100 --datacenters 10`` for another budget or shape;
    ``nox -s sim -- --seed 42`` replays one seed exactly (``--trace`` prints it).
    """
    _install_workspace(session)
    session.run("python", "-m", "wanfed_sim", *session.posargs)


@nox.session
def mutants(session: nox.Session) -> None:
    """Curated mutations of the security and federation guards; each must be killed.

    ``nox -s mutants`` runs them all (two at a time); ``nox -s mutants -- --list``
    prints the catalog; ``nox -s mutants -- NAME ...`` runs some. The checkout is
    never modified: each mutation is applied to a temporary copy.
    """
    _install_workspace(session, *TEST_DEPS)
    session.run("python", "-m", "tools.mutants", *session.posargs)


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


@nox.session
def fuzz(session: nox.Session) -> None:
    """Every decoder of untrusted bytes under a coverage-guided fuzzer, for a bounded time.

    ``nox -s fuzz -- --minutes 10`` (default 2 in all); ``-- --only snapshot,http-body``.
    atheris (libFuzzer) where it installs, else hypothesis; reproducers land in build/fuzz/.
    """
    _install_workspace(session, "hypothesis>=6.100", "cryptography>=42")
    try:
        session.install("atheris>=2.3")
    except nox.command.CommandFailed:
        session.warn(
            "atheris does not install here; fuzzing with hypothesis (no coverage guidance)"
        )
    session.run("python", "-m", "tools.fuzz", *session.posargs)
