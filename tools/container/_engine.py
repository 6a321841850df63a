"""A podman command line confined to a private storage root and safe networks.

Every podman call made by the container tooling goes through `Podman`, so
three rules hold everywhere instead of at each call site:

* storage, run state, libpod temp files and network definitions live under one
  directory of ours (`ContainerHome`), so nothing else on the machine is
  touched and cleaning up means looking in one place;
* the OCI runtime is runc with explicit ulimits (crun cannot set
  RLIMIT_NOFILE or run with hybrid cgroups on the machines this targets);
* a container or build step never gets podman's default bridge network: the
  network mode must be ``none``, ``host`` or ``ns:<path>`` (a namespace the
  caller created), anything else is refused before podman runs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "ContainerError",
    "ContainerHome",
    "Podman",
    "RunSpec",
    "check_network_mode",
    "check_podman_args",
]

ULIMITS = ("nofile=4096:4096", "nproc=4096:4096")


class ContainerError(RuntimeError):
    """A container tool failed; the message names the command and its output."""


def check_network_mode(mode: str) -> str:
    """Refuse every network mode that could create podman's default bridge."""
    if mode in ("none", "host"):
        return mode
    if mode.startswith("ns:") and mode[3:].startswith("/"):
        return mode
    raise ContainerError(
        f"network mode {mode!r} is not allowed: use 'none', 'host' or "
        "'ns:<absolute path of a namespace you created>' (never the default bridge)"
    )


NETWORKED_COMMANDS = frozenset({"run", "create", "build"})


def check_podman_args(args: Sequence[str]) -> None:
    """Refuse a podman command that would fall back to the default network.

    ``run``, ``create`` and ``build`` must say ``--network <allowed mode>``
    explicitly, so even a call that bypasses `Podman.run_args` cannot end up
    on the bridge.
    """
    if not args or args[0] not in NETWORKED_COMMANDS:
        return
    modes = [args[i + 1] for i, arg in enumerate(args[:-1]) if arg == "--network"]
    modes += [arg.split("=", 1)[1] for arg in args if arg.startswith("--network=")]
    if not modes:
        raise ContainerError(f"podman {args[0]} without --network would use the default bridge")
    for mode in modes:
        check_network_mode(mode)


@dataclass(frozen=True, slots=True)
class ContainerHome:
    """The directory that holds all of podman's state for wanfed's tooling."""

    root: Path

    @property
    def storage(self) -> Path:
        return self.root / "storage"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def networks(self) -> Path:
        return self.root / "networks"

    def create(self) -> None:
        for path in (self.storage, self.run, self.tmp, self.networks):
            path.mkdir(parents=True, exist_ok=True)


@dataclass(frozen=True, slots=True)
class RunSpec:
    """One container to run; ``network`` is checked by `check_network_mode`."""

    image: str
    command: tuple[str, ...]
    network: str
    name: str | None = None
    volumes: tuple[tuple[Path, str], ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    workdir: str | None = None


class Podman:
    """podman with wanfed's private storage, runc, ulimits and network rule."""

    def __init__(self, home: ContainerHome, executable: str = "podman") -> None:
        found = shutil.which(executable)
        if found is None:
            raise ContainerError(f"{executable} is not installed (apt-get install podman runc)")
        runc = shutil.which("runc")
        if runc is None:
            raise ContainerError("runc is not installed (apt-get install runc)")
        home.create()
        self.home = home
        self.executable = found
        self.runtime = runc

    def global_args(self) -> list[str]:
        """The flags that pin every podman invocation to our home and runtime."""
        return [
            self.executable,
            "--root",
            str(self.home.storage),
            "--runroot",
            str(self.home.run),
            "--tmpdir",
            str(self.home.tmp),
            "--network-config-dir",
            str(self.home.networks),
            "--storage-driver",
            "overlay",
            "--runtime",
            self.runtime,
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
        ]

    def command(self, *args: str) -> list[str]:
        return [*self.global_args(), *args]

    def call(
        self,
        *args: str,
        check: bool = True,
        input_bytes: bytes | None = None,
        timeout: float = 600.0,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run podman, capturing output; a failure raises with podman's stderr."""
        check_podman_args(args)
        argv = self.command(*args)
        done = subprocess.run(argv, input=input_bytes, capture_output=True, timeout=timeout)
        if check and done.returncode != 0:
            raise ContainerError(
                f"podman {' '.join(args[:3])} ... exited {done.returncode}: "
                f"{done.stderr.decode(errors='replace').strip()[-2000:]}"
            )
        return done

    def text(self, *args: str, check: bool = True, timeout: float = 600.0) -> str:
        return self.call(*args, check=check, timeout=timeout).stdout.decode().strip()

    def run_args(self, spec: RunSpec, *, detach: bool) -> list[str]:
        """The argument list of ``podman run`` (without the global flags)."""
        args = ["run", "--network", check_network_mode(spec.network)]
        # Health checks run on demand (`podman healthcheck run`): their
        # periodic timer needs systemd, which these machines may not run.
        args += ["--health-interval", "disable"]
        for limit in ULIMITS:
            args += ["--ulimit", limit]
        if spec.name is not None:
            args += ["--name", spec.name]
        args.append("--detach" if detach else "--rm")
        for host_path, container_path in spec.volumes:
            args += ["--volume", f"{host_path}:{container_path}"]
        for key, value in spec.env.items():
            args += ["--env", f"{key}={value}"]
        if spec.workdir is not None:
            args += ["--workdir", spec.workdir]
        return [*args, spec.image, *spec.command]

    def run(self, spec: RunSpec, timeout: float = 120.0) -> subprocess.CompletedProcess[bytes]:
        """Run a container to completion (removed afterwards) and return its output."""
        return self.call(*self.run_args(spec, detach=False), check=False, timeout=timeout)

    def start(self, spec: RunSpec) -> str:
        """Start a detached container and return its id."""
        return self.text(*self.run_args(spec, detach=True))

    def remove_containers(self, *names: str) -> None:
        """Remove containers with their anonymous volumes; names already gone are fine."""
        if names:
            self.call("rm", "--force", "--ignore", "--volumes", "--time", "5", *names)

    def image_exists(self, ref: str) -> bool:
        return self.call("image", "exists", ref, check=False).returncode == 0

    def image_size(self, ref: str) -> int:
        info = json.loads(self.text("image", "inspect", ref))
        return int(info[0]["Size"])

    def container_names(self) -> list[str]:
        out = self.text("ps", "--all", "--format", "{{.Names}}")
        return [line for line in out.splitlines() if line]

    def image_refs(self) -> list[str]:
        """Every image in our storage: its tags, or its id when untagged."""
        out = json.loads(self.text("images", "--all", "--format", "json") or "[]")
        refs: list[str] = []
        for image in out:
            names = image.get("Names") or [image["Id"][:12]]
            refs.extend(names)
        return refs

    def network_names(self) -> list[str]:
        out = self.text("network", "ls", "--format", "{{.Name}}")
        return [line for line in out.splitlines() if line]

    def volume_names(self) -> list[str]:
        out = self.text("volume", "ls", "--format", "{{.Name}}")
        return [line for line in out.splitlines() if line]
