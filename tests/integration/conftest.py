"""Fixtures for topologies in network namespaces (root only; `nox -s integration`).

Two guarantees hold for the whole session:

* it starts clean: leftovers of earlier runs that died (killed, crashed) are
  removed first, never those of a run that is still alive;
* it ends clean: when it finishes, none of its namespaces and none of its
  processes remain, or the session fails loudly saying which.

Scenario tests record each scenario's result and measured recovery time with
the ``scenarios`` fixture; the session ends with one table of them, printed
also when a scenario fails.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from wanfed_topology import (
    DatacenterSpec,
    Supervisor,
    Topology,
    build,
    default_prefix,
    leftovers,
    reap_stale,
    start_federation,
    teardown,
)

SCENARIO_PROPERTY = "wanfed-scenario"


class Scenario:
    """One scenario of a test: its result and the recovery time it measured."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.result = "not reached"
        self.recovery: float | None = None
        self.started = time.monotonic()

    def recovered(self, seconds: float) -> float:
        """Record the recovery time (the first one counts: it is what the issue asks)."""
        if self.recovery is None:
            self.recovery = seconds
        print(f"[{self.name}] recovered in {seconds:.1f} s")
        return seconds

    def as_row(self) -> tuple[str, str, str]:
        recovery = "-" if self.recovery is None else f"{self.recovery:.1f} s"
        return self.name, self.result, recovery


class Scenarios:
    """The scenarios of one test, in order; rows reach the summary even if one fails."""

    def __init__(self, item: pytest.Item) -> None:
        self._item = item
        self._all: list[Scenario] = []
        self._failures: list[str] = []

    def plan(self, *names: str) -> None:
        """Name them all up front, so one that is never reached still shows in the table."""
        self._all = [Scenario(name) for name in names]

    def run(self, name: str, *, go_on: bool = False) -> _Running:
        """Run one scenario in a ``with`` block.

        ``go_on``: a failure is recorded and the test goes on to the next
        scenario (which does not depend on this one passing); the test then
        ends with :meth:`check` failing. Otherwise the failure ends the test.
        """
        scenario = next((s for s in self._all if s.name == name), None)
        if scenario is None:
            scenario = Scenario(name)
            self._all.append(scenario)
        return _Running(scenario, self._failures if go_on else None)

    def check(self) -> None:
        """Fail if a scenario run with ``go_on`` failed."""
        if self._failures:
            raise AssertionError("\n".join(self._failures))

    def publish(self) -> None:
        for scenario in self._all:
            self._item.user_properties.append((SCENARIO_PROPERTY, scenario.as_row()))


class _Running:
    def __init__(self, scenario: Scenario, failures: list[str] | None) -> None:
        self.scenario = scenario
        self._failures = failures

    def __enter__(self) -> Scenario:
        self.scenario.started = time.monotonic()
        self.scenario.result = "running"
        return self.scenario

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _: Any
    ) -> bool:
        took = time.monotonic() - self.scenario.started
        if kind is None:
            self.scenario.result = f"passed ({took:.0f} s)"
            return False
        words = " ".join(str(error).split())
        self.scenario.result = f"FAILED ({took:.0f} s): {kind.__name__} {words}"[:72]
        if self._failures is not None and issubclass(kind, AssertionError):
            self._failures.append(f"{self.scenario.name}: {error}")
            print(f"[{self.scenario.name}] FAILED, going on: {error}")
            return True
        return False


@pytest.fixture
def scenarios(request: pytest.FixtureRequest) -> Iterator[Scenarios]:
    recorder = Scenarios(request.node)
    try:
        yield recorder
    finally:
        recorder.publish()


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: Any) -> None:
    rows: list[tuple[str, str, str]] = []
    for reports in terminalreporter.stats.values():
        for report in reports:
            if getattr(report, "when", None) != "teardown":
                continue
            for key, value in getattr(report, "user_properties", ()):
                if key == SCENARIO_PROPERTY:
                    rows.append(tuple(value))
    if not rows:
        return
    widths = [
        max(len(row[i]) for row in [("scenario", "result", "recovery"), *rows]) for i in range(3)
    ]
    terminalreporter.section("federation scenarios")
    for row in [("scenario", "result", "recovery"), *rows]:
        terminalreporter.write_line(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        )


@pytest.fixture(scope="session", autouse=True)
def clean_session() -> Iterator[None]:
    """Start after removing dead runs' leftovers; end with none of this run's."""
    removed = reap_stale()
    if removed:
        print(f"removed {len(removed)} namespaces left by dead runs: {' '.join(removed)}")
    yield
    prefix = default_prefix()
    deadline = time.monotonic() + 10
    left = leftovers(prefix)
    while left and time.monotonic() < deadline:  # a killed process takes a moment to go
        time.sleep(0.2)
        left = leftovers(prefix)
    if left:
        raise AssertionError(
            f"this run left namespaces {left.namespaces} and processes {left.pids} behind"
        )


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


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[Callable[..., tuple[Topology, Supervisor]]]:
    """``federation(*specs, **start_federation_options)``: build a topology and start its
    federation; everything is stopped and removed after, and every process's last
    log lines are printed (the evidence when a scenario fails)."""
    started: list[tuple[Topology, Supervisor]] = []

    def start(*specs: DatacenterSpec, **options: Any) -> tuple[Topology, Supervisor]:
        topology = Topology(datacenters=list(specs))
        build(topology)
        supervisor = Supervisor(tmp_path / "logs")
        started.append((topology, supervisor))
        start_federation(topology, supervisor, tmp_path, **options)
        return topology, supervisor

    try:
        yield start
    finally:
        for topology, supervisor in started:
            supervisor.stop_all()
            for name, text in supervisor.logs():
                print(f"--- {name} (last lines) ---\n{text[-2500:]}")
            # Scenarios replace and remove hosts: teardown goes by prefix, so it
            # removes those too.
            teardown(topology)
