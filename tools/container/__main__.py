"""``python -m tools.container COMMAND``: build the image, prepare wheels, clean up.

Commands:
  wheels               fill build/container/wheels (for any engine, e.g. docker build)
  build [--tag T] [--base auto|debootstrap|IMAGE]
                       build the image with podman in wanfed's private storage
  clean                remove containers, volumes and images except the cached base
  check-clean [--except-image REF]
                       exit 1 if anything but the cached base (and REF) is left behind
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ._build import BuildPlan, build_image, default_home, leftovers, remove_all_but_cache
from ._engine import ContainerError, Podman
from ._wheelhouse import TargetPython, build_wheelhouse

ROOT = Path(__file__).resolve().parents[2]
STARTED = time.monotonic()


def say(message: str) -> None:
    print(f"[container {time.monotonic() - STARTED:5.0f}s] {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.container", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    wheels = commands.add_parser("wheels", help="prepare the wheelhouse on the host")
    wheels.add_argument("--python-version", default=TargetPython().version)
    build = commands.add_parser("build", help="build the server image with podman")
    build.add_argument("--tag", default="localhost/wanfed:dev")
    build.add_argument("--base", default="auto", help="auto, debootstrap, or an image reference")
    commands.add_parser("clean", help="remove everything but the cached base image")
    check = commands.add_parser("check-clean", help="fail if anything but the cached base is left")
    check.add_argument("--except-image", action="append", default=[], metavar="REF")
    args = parser.parse_args(argv)
    try:
        if args.command == "wheels":
            target = TargetPython(version=args.python_version)
            build_wheelhouse(ROOT, ROOT / "build/container/wheels", target, say)
            return 0
        podman = Podman(default_home())
        if args.command == "build":
            build_image(podman, BuildPlan(root=ROOT, tag=args.tag, base=args.base), say)
        elif args.command == "clean":
            remove_all_but_cache(podman, say)
        else:
            found = leftovers(podman, keep=args.except_image)
            if found:
                say(f"left behind: {found}")
                return 1
            kept = ", ".join(["the cached base", *args.except_image])
            say(f"no containers, volumes or networks left in {podman.home.root}; images: {kept}")
    except ContainerError as exc:
        say(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
