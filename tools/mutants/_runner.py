"""Apply each mutation to a private copy of the tree and run its killing tests there.

Why a copy: the checkout must stay exactly as it was, whatever happens — a
failing test, a hung one, Ctrl-C. Each mutation gets its own copy of the
tracked (and untracked, not ignored) files in a temporary directory; the
workspace packages are imported from that copy because its ``src`` folders
lead ``PYTHONPATH``, ahead of the editable installs that point at the
checkout (checked once per run, :func:`check_isolation`).

A mutation is *killed* only when pytest ran the named tests and at least one
failed (exit status 1). Passing (0) means it survived; a collection error, a
usage error or no test collected is an error of the entry, not a kill; a run
that outlives its timeout is not a kill either: a test that notices a broken
guard only by hanging would hang CI, so killing tests carry their own
deadlines.
"""

from __future__ import annotations

import contextlib
import enum
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ._catalog import Mutation

__all__ = [
    "Outcome",
    "Verdict",
    "check_isolation",
    "check_snippets",
    "copy_tree",
    "run_baseline",
    "run_mutations",
]

SRC_DIRS = (
    "packages/wanfed-proto/src",
    "packages/wanfed-fsm/src",
    "packages/wanfed-gateway-locator/src",
    "packages/wanfed-replication/src",
    "packages/wanfed-agent/src",
    "services/server/src",
    "tools/topology/src",
)
IMPORT_NAMES = (
    "wanfed_proto",
    "wanfed_fsm",
    "wanfed_gateway_locator",
    "wanfed_replication",
    "wanfed_agent",
    "wanfed_server",
    "wanfed_topology",
)
PYTEST_ARGS = ("-q", "-rfE", "--no-header", "-x")


class Verdict(enum.Enum):
    KILLED = "yes"
    SURVIVED = "NO: survived"
    STALE = "NO: snippet does not match"
    NO_TEST = "NO: no killing test named"
    ERROR = "NO: test run error"
    TIMEOUT = "NO: timed out"


@dataclass(frozen=True)
class Outcome:
    mutation: Mutation
    verdict: Verdict
    killers: tuple[str, ...] = ()
    """The named tests that failed (empty unless killed)."""
    detail: str = ""
    seconds: float = 0.0


# --- the snippets -----------------------------------------------------------------------


def check_snippets(root: Path, mutations: Sequence[Mutation]) -> dict[str, str]:
    """Mutation name → why its original snippet cannot be applied (absent when it can)."""
    problems: dict[str, str] = {}
    for mutation in mutations:
        path = root / mutation.file
        if not path.is_file():
            problems[mutation.name] = f"{mutation.file} does not exist"
            continue
        count = path.read_text(encoding="utf-8").count(mutation.original)
        if count != 1:
            problems[mutation.name] = (
                f"the original snippet occurs {count} times in {mutation.file} (must be once)"
            )
    return problems


def apply(copy: Path, mutation: Mutation) -> None:
    path = copy / mutation.file
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace(mutation.original, mutation.replacement, 1), encoding="utf-8")


# --- copies of the tree -----------------------------------------------------------------


def _tree_files(root: Path) -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        check=True,
        capture_output=True,
    ).stdout.decode()
    return [name for name in listed.split("\0") if name and (root / name).is_file()]


def copy_tree(root: Path, files: Sequence[str], target: Path) -> Path:
    for name in files:
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, destination)
    return target


def _environment(copy: Path) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(copy / folder) for folder in SRC_DIRS]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def check_isolation(copy: Path) -> None:
    """Every workspace package must be imported from the copy, or mutations are not seen."""
    script = (
        "import importlib, sys\n"
        f"for name in {IMPORT_NAMES!r}:\n"
        "    print(importlib.import_module(name).__file__)\n"
    )
    found = subprocess.run(
        [sys.executable, "-c", script],
        cwd=copy,
        env=_environment(copy),
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout.split()
    outside = [path for path in found if not Path(path).resolve().is_relative_to(copy.resolve())]
    if outside:
        raise RuntimeError(f"packages imported from outside the copy: {outside}")


# --- running pytest ---------------------------------------------------------------------


class _Processes:
    """The pytest processes under way, so that Ctrl-C stops them all (and only them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: set[subprocess.Popen[str]] = set()
        self.stopping = False

    def start(self, args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
        with self._lock:
            if self.stopping:
                raise KeyboardInterrupt
            process = subprocess.Popen(
                args,
                cwd=cwd,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
            self._live.add(process)
            return process

    def done(self, process: subprocess.Popen[str]) -> None:
        with self._lock:
            self._live.discard(process)

    def stop_all(self) -> None:
        with self._lock:
            self.stopping = True
            live = list(self._live)
        for process in live:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)


@dataclass(frozen=True)
class _Run:
    returncode: int | None
    """``None`` when the run outlived its timeout (it was killed)."""
    output: str
    failed: tuple[str, ...]


def _pytest(
    processes: _Processes, copy: Path, tests: Sequence[str], timeout: float, *extra: str
) -> _Run:
    process = processes.start(
        [sys.executable, "-m", "pytest", *PYTEST_ARGS, *extra, *tests],
        cwd=copy,
        env=_environment(copy),
    )
    try:
        output, _ = process.communicate(timeout=timeout)
        returncode: int | None = process.returncode
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        returncode = None
    finally:
        processes.done(process)
    failed = tuple(
        line.split(" ", 2)[1]
        for line in output.splitlines()
        if line.startswith(("FAILED ", "ERROR ")) and len(line.split(" ", 2)) > 1
    )
    return _Run(returncode, output, failed)


def _tail(output: str, lines: int = 15) -> str:
    return "\n".join(output.rstrip().splitlines()[-lines:])


def run_baseline(
    root: Path, scratch: Path, tests: Sequence[str], *, jobs: int, timeout: float
) -> tuple[bool, str]:
    """The killing tests must pass on the unmutated tree, or a "kill" proves nothing."""
    copy = copy_tree(root, _tree_files(root), scratch / "baseline")
    check_isolation(copy)
    extra = ("-n", str(jobs)) if jobs > 1 and len(tests) > 1 else ()
    run = _pytest(_Processes(), copy, sorted(set(tests)), timeout, *extra)
    return run.returncode == 0, _tail(run.output, 30)


def _one(
    root: Path,
    files: Sequence[str],
    scratch: Path,
    mutation: Mutation,
    processes: _Processes,
    timeout: float,
) -> Outcome:
    started = time.monotonic()
    copy = copy_tree(root, files, scratch / mutation.name)
    try:
        apply(copy, mutation)
        run = _pytest(processes, copy, mutation.tests, timeout)
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    seconds = time.monotonic() - started
    if run.returncode is None:
        return Outcome(mutation, Verdict.TIMEOUT, detail=_tail(run.output), seconds=seconds)
    if run.returncode == 1 and run.failed:
        return Outcome(mutation, Verdict.KILLED, killers=run.failed, seconds=seconds)
    if run.returncode == 0:
        return Outcome(mutation, Verdict.SURVIVED, detail=_tail(run.output), seconds=seconds)
    return Outcome(mutation, Verdict.ERROR, detail=_tail(run.output), seconds=seconds)


@contextlib.contextmanager
def scratch_directory() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="wanfed-mutants-") as scratch:
        yield Path(scratch)


def run_mutations(
    root: Path,
    mutations: Sequence[Mutation],
    scratch: Path,
    *,
    jobs: int,
    timeout: float,
) -> list[Outcome]:
    """Every mutation's verdict, in catalog order. Ctrl-C stops every pytest started here."""
    problems = check_snippets(root, mutations)
    outcomes: dict[str, Outcome] = {}
    runnable: list[Mutation] = []
    for mutation in mutations:
        if mutation.name in problems:
            outcomes[mutation.name] = Outcome(
                mutation, Verdict.STALE, detail=problems[mutation.name]
            )
        elif not mutation.tests:
            outcomes[mutation.name] = Outcome(mutation, Verdict.NO_TEST, detail=mutation.note)
        else:
            runnable.append(mutation)
    files = _tree_files(root)
    processes = _Processes()
    pool = ThreadPoolExecutor(max_workers=max(1, jobs))
    try:
        futures = {
            m.name: pool.submit(_one, root, files, scratch, m, processes, timeout) for m in runnable
        }
        for name, future in futures.items():
            outcome = future.result()
            outcomes[name] = outcome
            print(f"  {name}: {outcome.verdict.value} ({outcome.seconds:.1f} s)", flush=True)
    except BaseException:
        processes.stop_all()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return [outcomes[m.name] for m in mutations]
