"""The only checks a server runs are its own agent's: at most once a second each,
and at most ``max_checks`` of them."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from wanfed_fsm import Node
from wanfed_server.http import HttpApi
from wanfed_server.local_agent import (
    DEFAULT_MAX_CHECKS,
    MIN_CHECK_INTERVAL,
    LocalAgent,
    LocalState,
    ServiceFile,
    TooManyChecksError,
    parse_service_definition,
)

if TYPE_CHECKING:
    from conftest import FakeServer

NODE = Node(node="s1", address="127.0.0.1", datacenter="dc1")


def _service(name: str, *check_ids: str) -> dict[str, Any]:
    return {"Name": name, "Checks": [{"ID": cid, "TTL": "30s"} for cid in check_ids]}


# --- minimum interval -----------------------------------------------------------------


@pytest.mark.parametrize("interval", ["1ms", "999ms", "0.5s", 1_000_000])
def test_a_tcp_interval_below_one_second_is_raised_to_it_with_a_warning(
    interval: object, caplog: pytest.LogCaptureFixture
) -> None:
    raw = {"Name": "db", "Check": {"ID": "db", "TCP": "127.0.0.1:5432", "Interval": interval}}
    with caplog.at_level(logging.WARNING, logger="wanfed_server.local_agent._definitions"):
        (check,) = parse_service_definition(raw).checks
    assert check.interval == MIN_CHECK_INTERVAL == 1.0
    assert check.definition.interval == "1s", "the catalog shows the interval that runs"
    (record,) = caplog.records
    assert "check interval below the minimum check_id=db" in record.getMessage()
    assert "running it every 1s instead" in record.getMessage()


def test_an_interval_of_one_second_or_more_is_kept_without_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        for text, seconds in (("1s", 1.0), ("1500ms", 1.5), ("1m", 60.0)):
            raw = {"Name": "db", "Check": {"TCP": "127.0.0.1:5432", "Interval": text}}
            (check,) = parse_service_definition(raw).checks
            assert (check.interval, check.definition.interval) == (seconds, text)
    assert caplog.records == []


# --- the cap ------------------------------------------------------------------------------


def test_the_default_cap_admits_256_checks_and_refuses_the_next() -> None:
    assert DEFAULT_MAX_CHECKS == 256
    state = LocalState(node=NODE, datacenter="dc1")
    for n in range(16):
        state.add_service(
            parse_service_definition(_service(f"svc{n}", *[f"c{n}-{i}" for i in range(16)])), 0.0
        )
    assert len(state.checks()) == 256
    with pytest.raises(TooManyChecksError, match="would make 257 checks, the limit is 256"):
        state.add_service(parse_service_definition(_service("one-more", "x")), 0.0)


def test_a_refused_registration_changes_nothing() -> None:
    state = LocalState(node=NODE, datacenter="dc1", max_checks=2)
    state.add_service(parse_service_definition(_service("web", "a")), 0.0)
    with pytest.raises(TooManyChecksError) as refused:
        state.add_service(parse_service_definition(_service("db", "b", "c")), 0.0)
    assert (refused.value.wanted, refused.value.limit) == (3, 2)
    assert set(state.services()) == {"web"}
    assert set(state.checks()) == {"a"}


def test_registrations_that_do_not_grow_past_the_cap_are_allowed() -> None:
    state = LocalState(node=NODE, datacenter="dc1", max_checks=2)
    state.add_service(parse_service_definition(_service("web", "a", "b")), 0.0)
    # the same checks again, and a service without checks
    state.add_service(parse_service_definition(_service("web", "a", "b")), 0.0)
    state.add_service(parse_service_definition({"Name": "plain"}), 0.0)
    # swapping a check for another only with replace-existing-checks
    with pytest.raises(TooManyChecksError):
        state.add_service(parse_service_definition(_service("web", "a", "c")), 0.0)
    state.add_service(
        parse_service_definition(_service("web", "a", "c")), 0.0, replace_existing_checks=True
    )
    assert set(state.checks()) == {"a", "c"}


@pytest.mark.parametrize("limit", [0, -1])
def test_a_cap_below_one_is_refused(limit: int) -> None:
    with pytest.raises(ValueError, match=f"check limit must be at least 1, got {limit}"):
        LocalState(node=NODE, datacenter="dc1", max_checks=limit)


@pytest.fixture
async def capped(fake_server: FakeServer) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    agent = LocalAgent(fake_server.dispatcher, node=NODE, datacenter="dc1", max_checks=1)
    http = HttpApi(fake_server.dispatcher, fake_server.view, agent, "127.0.0.1", 0)
    await http.start()
    async with aiohttp.ClientSession() as session:
        yield f"http://127.0.0.1:{http.port}", session
    await http.stop()


async def test_the_http_api_refuses_a_registration_past_the_cap_with_a_400(
    capped: tuple[str, aiohttp.ClientSession],
) -> None:
    base, session = capped
    path = base + "/v1/agent/service/register"
    async with session.put(path, json=_service("web", "a")) as first:
        assert first.status == 200
    async with session.put(path, json=_service("db", "b")) as refused:
        assert refused.status == 400
        assert await refused.text() == (
            "agent check limit reached: this registration would make 2 checks, "
            "the limit is 1; deregister services or checks first"
        )
    async with session.get(base + "/v1/agent/checks") as checks:
        assert set(await checks.json()) == {"a"}


async def test_saved_services_past_the_cap_are_not_restored_and_the_agent_still_starts(
    fake_server: FakeServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "services.json"
    ServiceFile(path).save(
        [
            parse_service_definition(_service("web", "a")),
            parse_service_definition(_service("db", "b")),
        ]
    )
    with caplog.at_level(logging.ERROR):
        agent = LocalAgent(
            fake_server.dispatcher, node=NODE, datacenter="dc1", services_file=path, max_checks=1
        )
    assert set(agent.services()) == {"web"}
    assert any("saved service not restored service_id=db" in r.getMessage() for r in caplog.records)
