"""Fixtures for the image smoke tests: podman in wanfed's storage, containers, addresses.

These tests need a built image, so they run under ``nox -s container``, which
builds it and names it in ``WANFED_CONTAINER_IMAGE``. Without that variable
the tests marked ``container`` are deselected (a plain ``pytest`` run has no
image to test); the others here test the tooling itself and always run.

Long-running containers use ``--network host`` and listen only on loopback
addresses from a 127.x.y.0/24 block drawn per test, so the test process
reaches their HTTP APIs directly and nothing else on the machine is in the
way; one-shot commands get ``--network none``.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The tooling under test lives in the repository's tools/ folder, which is not
# an installed package; pytest's importlib mode does not put the root on the path.
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools.container import ContainerHome, Podman, default_home  # noqa: E402
from tools.container.testing import Containers  # noqa: E402

IMAGE_ENV = "WANFED_CONTAINER_IMAGE"
HERE = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "container: needs the server image (nox -s container)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get(IMAGE_ENV):
        return
    ours = [
        item
        for item in items
        if HERE in item.path.parents and item.get_closest_marker("container") is not None
    ]
    if ours:
        config.hook.pytest_deselected(items=ours)
        items[:] = [item for item in items if item not in ours]


@pytest.fixture(scope="session")
def image() -> str:
    return os.environ[IMAGE_ENV]


@pytest.fixture(scope="session")
def podman() -> Podman:
    configured = os.environ.get("WANFED_CONTAINER_HOME")
    return Podman(ContainerHome(Path(configured)) if configured else default_home())


@pytest.fixture
def containers(podman: Podman, image: str) -> Iterator[Containers]:
    started = Containers(podman, image)
    try:
        yield started
    finally:
        # Shown by pytest only when the test failed: what each container said.
        for name in started.names:
            print(f"--- podman logs {name} ---\n{started.logs(name)}")
        started.remove_all()


@pytest.fixture
def loopback_block() -> str:
    """A random 127.x.y prefix; addresses are ``f"{block}.{n}"``."""
    return f"127.{random.randint(100, 254)}.{random.randint(1, 254)}"
