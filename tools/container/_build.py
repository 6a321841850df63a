"""Building the server image, and proving that nothing was left behind.

The sequence is: choose a base (a cached one, the official slim Python image
when a registry answers, or else a debootstrap image), fill the wheelhouse on
the host, then ``podman build`` with no network at all. Afterwards
`leftovers` lists whatever is in our private storage beyond the cached base,
so the caller can assert a clean machine.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ._base_image import DebootstrapRecipe, apt_mirror, ensure_base_image
from ._engine import ContainerError, ContainerHome, Podman, check_podman_args
from ._wheelhouse import TargetPython, build_wheelhouse

__all__ = [
    "OFFICIAL_BASE",
    "BuildPlan",
    "Leftovers",
    "build_image",
    "choose_base",
    "default_home",
    "leftovers",
    "registry_reachable",
    "remove_all_but_cache",
]

OFFICIAL_BASE = "docker.io/library/python:3.11-slim-bookworm"
CONTAINERFILE = Path("services/server/Containerfile")
WHEELHOUSE = Path("build/container/wheels")


def default_home() -> ContainerHome:
    """Our podman state lives in one cache directory (override: WANFED_CONTAINER_HOME)."""
    configured = os.environ.get("WANFED_CONTAINER_HOME")
    if configured:
        return ContainerHome(Path(configured))
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return ContainerHome(cache / "wanfed" / "container")


def registry_reachable(host: str = "registry-1.docker.io", timeout: float = 3.0) -> bool:
    """A TCP connect to the registry: cheap, and enough to decide between pull and debootstrap."""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def choose_base(podman: Podman, base: str, say: Callable[[str], None]) -> str:
    """Resolve ``auto`` / ``debootstrap`` / an image reference to a local base image."""
    recipe = DebootstrapRecipe(mirror=apt_mirror())
    if base == "debootstrap":
        return ensure_base_image(podman, recipe, say)
    if base != "auto":
        return base
    if podman.image_exists(OFFICIAL_BASE):
        say(f"base image {OFFICIAL_BASE} found in the cache")
        return OFFICIAL_BASE
    if podman.image_exists(recipe.tag):
        say(f"base image {recipe.tag} found in the cache; not rebuilding")
        return recipe.tag
    if registry_reachable():
        say(f"pulling {OFFICIAL_BASE}")
        pulled = podman.call("pull", "--quiet", OFFICIAL_BASE, check=False, timeout=300)
        if pulled.returncode == 0:
            return OFFICIAL_BASE
        say("pull failed; building a local base image instead")
    else:
        say("no image registry reachable; building a local base image with debootstrap")
    return ensure_base_image(podman, recipe, say)


@dataclass(frozen=True, slots=True)
class BuildPlan:
    """Everything `build_image` needs; ``root`` is the repository checkout."""

    root: Path
    tag: str
    base: str = "auto"
    target: TargetPython = field(default_factory=TargetPython)


def _project_version(root: Path) -> str:
    with (root / "services" / "server" / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def _source_url(root: Path) -> str:
    done = subprocess.run(
        ["git", "-C", str(root), "remote", "get-url", "origin"], capture_output=True, text=True
    )
    url = done.stdout.strip() if done.returncode == 0 else ""
    # Only a public web address belongs in the image label, not a local path.
    return url.removesuffix(".git") if url.startswith(("https://", "http://")) else ""


def build_image(podman: Podman, plan: BuildPlan, say: Callable[[str], None]) -> str:
    """Build the server image and return its tag; prints progress through ``say``."""
    started = time.monotonic()
    base = choose_base(podman, plan.base, say)
    wheel_cache = podman.home.root / "wheels"
    build_wheelhouse(plan.root, plan.root / WHEELHOUSE, plan.target, say, cache=wheel_cache)
    say(f"podman build {plan.tag} FROM {base} (no network; offline pip install)")
    build_args = (
        "build",
        "--file",
        str(plan.root / CONTAINERFILE),
        "--tag",
        plan.tag,
        "--format",
        "docker",  # the OCI image format has no HEALTHCHECK
        "--network",
        "none",
        "--isolation",
        "oci",
        "--layers=false",
        "--force-rm",
        "--pull=never",
        "--ulimit",
        "nofile=4096:4096",
        "--ulimit",
        "nproc=4096:4096",
        "--build-arg",
        f"BASE_IMAGE={base}",
        "--build-arg",
        f"VERSION={_project_version(plan.root)}",
        "--build-arg",
        f"SOURCE={_source_url(plan.root)}",
        str(plan.root),
    )
    check_podman_args(build_args)
    argv = podman.command(*build_args)
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        assert proc.stdout is not None
        tail: list[str] = []
        for line in proc.stdout:
            tail = [*tail[-30:], line.rstrip()]
            if line.startswith(("STEP ", "[")) or "COMMIT" in line:
                say(f"  {line.rstrip()} ({time.monotonic() - started:.0f} s)")
        if proc.wait() != 0:
            raise ContainerError("podman build failed:\n" + "\n".join(tail))
    # Stage images of a multi-stage build are not ours to keep.
    podman.call("image", "prune", "--force", check=False)
    size = podman.image_size(plan.tag)
    say(f"image {plan.tag}: {size / 1e6:.0f} MB, built in {time.monotonic() - started:.0f} s")
    return plan.tag


@dataclass(frozen=True, slots=True)
class Leftovers:
    """What remains in our storage besides the cached base images."""

    containers: list[str]
    images: list[str]
    volumes: list[str]
    networks: list[str]

    def __bool__(self) -> bool:
        return bool(self.containers or self.images or self.volumes or self.networks)


def _is_cache(ref: str) -> bool:
    return ref.startswith("localhost/wanfed-base:") or ref == OFFICIAL_BASE


def leftovers(podman: Podman, keep: Sequence[str] = ()) -> Leftovers:
    """List containers, non-cache images, volumes and networks in our storage.

    The ``podman`` network is podman's built-in default definition (it has no
    bridge until a container uses it, which `Podman` never allows); any other
    network, and any ``cni-podman*`` interface on the host, is a leftover.
    Images named in ``keep`` are not.
    """
    networks = [name for name in podman.network_names() if name != "podman"]
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True)
    networks += [
        line.split(":")[1].strip()
        for line in links.stdout.splitlines()
        if line.split(":")[1].strip().startswith("cni-podman")
    ]
    return Leftovers(
        containers=podman.container_names(),
        images=[ref for ref in podman.image_refs() if not _is_cache(ref) and ref not in keep],
        volumes=podman.volume_names(),
        networks=networks,
    )


def remove_all_but_cache(podman: Podman, say: Callable[[str], None]) -> None:
    """Remove every container, volume and image except the cached bases."""
    found = leftovers(podman)
    if found.containers:
        say(f"removing containers {found.containers}")
        podman.remove_containers(*found.containers)
    if found.volumes:
        say(f"removing volumes {found.volumes}")
        podman.call("volume", "rm", "--force", *found.volumes, check=False)
    if found.images:
        say(f"removing images {found.images}")
        podman.call("rmi", "--force", *found.images, check=False)
    podman.call("image", "prune", "--force", check=False)
