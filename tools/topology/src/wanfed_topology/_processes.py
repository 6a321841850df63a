"""Processes inside the namespaces: started with ``ip netns exec``, always stopped.

Each process logs to its own file, which the harness prints on failure, so a
test's output says what every server and gateway did.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from ._netns import PREFIX_ENV
from ._plan import Host

__all__ = ["Process", "Supervisor"]

log = logging.getLogger("wanfed.topology")


class Process:
    def __init__(
        self,
        name: str,
        host: Host,
        popen: subprocess.Popen[bytes],
        log_path: Path,
        argv: Sequence[str],
    ) -> None:
        self.name = name
        self.host = host
        self.popen = popen
        self.log_path = log_path
        self.argv = list(argv)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_output(self, text: str, timeout: float = 10.0) -> None:
        """Block until ``text`` appears in the log (the process's own readiness line).

        Polls the log file: the process writes it, not us, and a readiness
        line is the only signal a foreign program gives.
        """
        deadline = time.monotonic() + timeout
        while text not in self.log_text():
            if not self.alive():
                raise RuntimeError(f"{self.name} exited before saying {text!r}:\n{self.log_text()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} did not say {text!r} within {timeout:.0f} s")
            time.sleep(0.02)

    def signal(self, signum: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signum)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        self.signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0f s; killing it", self.name, timeout)
            self.signal(signal.SIGKILL)
            return self.popen.wait(5)


class Supervisor:
    """Starts processes in namespaces and guarantees they are stopped."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.processes: dict[str, Process] = {}

    def start(
        self,
        name: str,
        host: Host,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Process:
        if name in self.processes and self.processes[name].alive():
            raise RuntimeError(f"{name} is already running")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        handle = log_path.open("ab")
        try:
            popen = subprocess.Popen(
                ["ip", "netns", "exec", host.netns, *argv],
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # The tag lets a later run find this process if ours dies first.
                env={**os.environ, **(env or {}), PREFIX_ENV: host.netns.split("-", 1)[0]},
                cwd=cwd,
                start_new_session=True,
            )
        finally:
            handle.close()
        process = Process(name, host, popen, log_path, argv)
        self.processes[name] = process
        log.info("started %s in %s (pid %d)", name, host.netns, popen.pid)
        return process

    def restart(self, name: str) -> Process:
        """Start ``name`` again with the argv it was first started with (same log file)."""
        old = self.processes[name]
        if old.alive():
            raise RuntimeError(f"{name} is still running")
        return self.start(name, old.host, old.argv)

    def stop_all(self, timeout: float = 10.0) -> None:
        for process in self.processes.values():
            process.signal(signal.SIGTERM)
        for process in self.processes.values():
            with contextlib.suppress(Exception):
                process.stop(timeout)

    def logs(self) -> Iterator[tuple[str, str]]:
        for name, process in sorted(self.processes.items()):
            yield name, process.log_text()
