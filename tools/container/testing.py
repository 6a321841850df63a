"""Helpers for the image smoke tests (``tests/container``): ports, mounts, HTTP, waiting.

The servers under test run in containers, i.e. other processes that offer
nothing to wait on but their HTTP API, so `until` polls with a deadline.
"""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from ._engine import Podman, RunSpec

__all__ = [
    "IMAGE_UID",
    "Containers",
    "free_port",
    "http_json",
    "leader_of",
    "owned_dir",
    "until",
]

IMAGE_UID = 10001
"""The uid and gid of the image's ``wanfed`` user (see the Containerfile)."""
T = TypeVar("T")


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def owned_dir(path: Path) -> Path:
    """A host directory the image's non-root user can write (bind mounts keep host owners)."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, IMAGE_UID, IMAGE_UID)
    return path


def http_json(url: str, method: str = "GET", body: object = None, timeout: float = 3.0) -> object:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def until(what: str, attempt: Callable[[], T | None], timeout: float = 60.0) -> T:
    """Retry ``attempt`` every 200 ms until it returns a value; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = attempt()
        except (OSError, urllib.error.URLError, ValueError) as exc:
            last = exc
        else:
            if result is not None:
                return result
        time.sleep(0.2)
    raise AssertionError(f"gave up after {timeout:.0f} s waiting for {what}; last error: {last!r}")


def leader_of(http: str) -> str | None:
    """The leader's RPC address as the agent at ``http`` reports it, None while unknown."""
    leader = http_json(f"http://{http}/v1/status/leader")
    return leader if isinstance(leader, str) and leader else None


@dataclass
class Containers:
    """Starts containers with unique names and removes every one of them at the end."""

    podman: Podman
    image: str
    prefix: str = field(default_factory=lambda: f"wanfed-test-{uuid.uuid4().hex[:8]}")
    names: list[str] = field(default_factory=list)

    def start(
        self,
        role: str,
        *command: str,
        volumes: tuple[tuple[Path, str], ...] = (),
        env: dict[str, str] | None = None,
    ) -> str:
        name = f"{self.prefix}-{role}"
        self.names.append(name)
        spec = RunSpec(
            self.image, command, network="host", name=name, volumes=volumes, env=env or {}
        )
        self.podman.start(spec)
        return name

    def run(
        self,
        *command: str,
        volumes: tuple[tuple[Path, str], ...] = (),
        workdir: str | None = None,
    ) -> str:
        """Run a one-shot command; its stdout, or a failure with its stderr."""
        spec = RunSpec(self.image, command, network="none", volumes=volumes, workdir=workdir)
        done = self.podman.run(spec)
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        return done.stdout.decode()

    def logs(self, name: str) -> str:
        done = self.podman.call("logs", name, check=False)
        return (done.stdout + done.stderr).decode(errors="replace")

    def remove_all(self) -> None:
        self.podman.remove_containers(*self.names)
