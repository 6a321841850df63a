"""Fixtures for topologies in network namespaces (root only; `nox -s integration`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from wanfed_topology import DatacenterSpec, Supervisor, Topology, build, teardown


@pytest.fixture
def two_dc_network(tmp_path: Path) -> Iterator[tuple[Topology, Supervisor]]:
    """dc1 (primary) and dc2, one server and one gateway each; nothing running."""
    topology = Topology(
        datacenters=[DatacenterSpec(name="dc1"), DatacenterSpec(name="dc2")],
    )
    build(topology)
    supervisor = Supervisor(tmp_path / "logs")
    try:
        yield topology, supervisor
    finally:
        supervisor.stop_all()
        for name, text in supervisor.logs():
            if text:
                print(f"--- {name} ---\n{text}")
        teardown(topology)
