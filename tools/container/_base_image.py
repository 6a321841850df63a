"""A Debian base image made from a debootstrap root filesystem, cached by tag.

When no image registry is reachable the official slim Python image cannot be
pulled, but the Debian mirror that apt uses still works. debootstrap builds a
minimal bookworm root with Debian's Python 3.11 (the version the wanfed
packages and the wheelhouse target), which podman imports as an image. The
tag carries a hash of the recipe, so changing the recipe builds a new base
and an unchanged one is found in podman's storage and reused (a second run
skips the ~40 s of debootstrap entirely).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ._engine import ContainerError, Podman

__all__ = ["DebootstrapRecipe", "apt_mirror", "ensure_base_image"]

DEFAULT_MIRROR = "http://deb.debian.org/debian"


@dataclass(frozen=True, slots=True)
class DebootstrapRecipe:
    """What goes into the base root filesystem; its hash names the image tag."""

    suite: str = "bookworm"
    packages: tuple[str, ...] = ("python3", "python3-venv", "ca-certificates")
    mirror: str = DEFAULT_MIRROR

    @property
    def tag(self) -> str:
        recipe = f"{self.suite}|{','.join(self.packages)}".encode()
        digest = hashlib.sha256(recipe).hexdigest()[:12]
        return f"localhost/wanfed-base:{self.suite}-{digest}"


def apt_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The Debian mirror apt already uses, since it is the one known to work."""
    candidates = sorted(sources.glob("sources.list.d/*.sources")) + sorted(
        sources.glob("sources.list*")
    )
    for path in candidates:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        for match in re.finditer(r"(?:URIs:|^deb)\s+(\S+/debian)/?\s", text, re.MULTILINE):
            return match.group(1)
    return DEFAULT_MIRROR


def ensure_base_image(podman: Podman, recipe: DebootstrapRecipe, say: Callable[[str], None]) -> str:
    """Return the tag of the cached base image, building it first if absent."""
    if podman.image_exists(recipe.tag):
        say(f"base image {recipe.tag} found in the cache; not rebuilding")
        return recipe.tag
    if shutil.which("debootstrap") is None:
        raise ContainerError("debootstrap is not installed (apt-get install debootstrap)")
    with tempfile.TemporaryDirectory(prefix="wanfed-rootfs-", dir=podman.home.tmp) as tmp:
        rootfs = Path(tmp) / "rootfs"
        say(
            f"debootstrap {recipe.suite} from {recipe.mirror} "
            f"(+{', '.join(recipe.packages)}); a few minutes, once per recipe"
        )
        started = time.monotonic()
        argv = [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(recipe.packages)}",
            recipe.suite,
            str(rootfs),
            recipe.mirror,
        ]
        with subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as proc:
            assert proc.stdout is not None
            tail: list[str] = []
            for line in proc.stdout:
                tail = [*tail[-20:], line.rstrip()]
                # One line per package is noise; the phase lines show progress.
                phase = line.rstrip().removeprefix("I: ")
                if phase.endswith("packages...") or "base system" in phase:
                    say(f"  debootstrap: {phase} ({time.monotonic() - started:.0f} s)")
            if proc.wait() != 0:
                raise ContainerError("debootstrap failed:\n" + "\n".join(tail))
        # apt lists and caches are dead weight in an image that never runs apt.
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            shutil.rmtree(rootfs / junk, ignore_errors=True)
        say(f"  root filesystem ready in {time.monotonic() - started:.0f} s; importing it")
        tar = subprocess.Popen(
            ["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE
        )
        assert tar.stdout is not None
        done = subprocess.run(
            podman.command(
                "import",
                "--change",
                'CMD ["/usr/bin/python3"]',
                "--change",
                "ENV LANG=C.UTF-8",
                "-",
                recipe.tag,
            ),
            stdin=tar.stdout,
            capture_output=True,
        )
        tar.stdout.close()
        if tar.wait() != 0 or done.returncode != 0:
            raise ContainerError(f"podman import failed: {done.stderr.decode(errors='replace')}")
    say(f"base image {recipe.tag} built in {time.monotonic() - started:.0f} s and cached")
    return recipe.tag
