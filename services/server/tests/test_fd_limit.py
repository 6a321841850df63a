"""``wanfed agent`` and ``wanfed gateway`` raise the soft open-files limit at start."""

from __future__ import annotations

import logging
import resource
from typing import Final

import pytest

from wanfed_agent.config import load_config
from wanfed_server.cli import build_parser
from wanfed_server.commands import _fd_limit
from wanfed_server.commands._fd_limit import FD_RESERVE, raise_open_files_limit
from wanfed_server.commands.agent import run_agent
from wanfed_server.commands.gateway import run_gateway, settings_from_args

LOG = "wanfed_server.fd_limit"


class FakeLimits:
    """``RLIMIT_NOFILE`` as the module under test sees it, kept in memory.

    The real hard limit cannot be lowered and raised again without privileges,
    and may be unlimited on one machine and tiny on another; a fake pair lets
    every case run everywhere without touching the test process's own limit.
    """

    def __init__(self, soft: int, hard: int) -> None:
        self.limits = (soft, hard)

    def getrlimit(self, which: int) -> tuple[int, int]:
        assert which == resource.RLIMIT_NOFILE
        return self.limits

    def setrlimit(self, which: int, limits: tuple[int, int]) -> None:
        assert which == resource.RLIMIT_NOFILE
        soft, hard = limits
        if hard > self.limits[1]:
            raise ValueError("not allowed to raise the hard limit")
        self.limits = (soft, hard)


HARD: Final = 4096


@pytest.fixture
def fake_limits(monkeypatch: pytest.MonkeyPatch) -> FakeLimits:
    """A soft limit one below the hard one."""
    fake = FakeLimits(HARD - 1, HARD)
    monkeypatch.setattr(resource, "getrlimit", fake.getrlimit)
    monkeypatch.setattr(resource, "setrlimit", fake.setrlimit)
    return fake


@pytest.fixture
def lowered_soft_limit(fake_limits: FakeLimits) -> tuple[int, int]:
    return fake_limits.limits


def test_the_soft_limit_is_raised_to_the_hard_limit_and_logged_once(
    lowered_soft_limit: tuple[int, int], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOG)
    before, hard = lowered_soft_limit
    limit = raise_open_files_limit()
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    assert (limit.soft, limit.hard, limit.previous_soft) == (hard, hard, before)
    (line,) = [r for r in caplog.records if r.name == LOG]
    assert line.levelno == logging.INFO
    assert "raised" in line.getMessage()
    assert (line.__dict__["soft"], line.__dict__["hard"], line.__dict__["previous_soft"]) == (
        str(hard),
        str(hard),
        str(before),
    )


def test_a_limit_that_cannot_be_raised_is_a_warning_not_a_failure(
    lowered_soft_limit: tuple[int, int],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.INFO, logger=LOG)
    before, _ = lowered_soft_limit

    def refuse(which: int, limits: tuple[int, int]) -> None:
        raise ValueError("not allowed here")

    monkeypatch.setattr(resource, "setrlimit", refuse)
    assert raise_open_files_limit().soft == before
    warnings = [r for r in caplog.records if r.name == LOG and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "not allowed here" in warnings[0].getMessage()


def test_caps_that_would_use_up_the_limit_are_warned_about(
    fake_limits: FakeLimits, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOG)
    soft = raise_open_files_limit().soft
    assert soft == HARD
    raise_open_files_limit(soft - FD_RESERVE)  # fits exactly
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
    raise_open_files_limit(soft - FD_RESERVE + 1)
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "connection caps leave too few open files" in warning.getMessage()
    assert warning.__dict__["connection_caps"] == soft - FD_RESERVE + 1


def test_an_unlimited_soft_limit_is_never_warned_about(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOG)
    fake = FakeLimits(resource.RLIM_INFINITY, resource.RLIM_INFINITY)
    monkeypatch.setattr(resource, "getrlimit", fake.getrlimit)
    monkeypatch.setattr(resource, "setrlimit", fake.setrlimit)
    assert raise_open_files_limit(10**9).soft == resource.RLIM_INFINITY
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
    (line,) = [r for r in caplog.records if r.name == LOG]
    assert line.__dict__["soft"] == "unlimited"


class Raised(Exception):
    """Stands in for the limit being raised: nothing after it may have run."""


def _record_call(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []

    def fake(connection_caps: int = 0) -> _fd_limit.OpenFilesLimit:
        calls.append(connection_caps)
        raise Raised

    monkeypatch.setattr(_fd_limit, "raise_open_files_limit", fake)
    return calls


async def test_the_agent_raises_the_limit_before_it_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = _record_call(monkeypatch)
    config = load_config((), (), {"node_name": "s1", "ports": {"server": 0, "http": 0}}, dev=True)
    with pytest.raises(Raised):
        await run_agent(config)
    assert calls == [config.limits.rpc_max_conns + config.limits.http_max_conns]


async def test_the_gateway_raises_the_limit_before_it_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = _record_call(monkeypatch)
    settings = settings_from_args(build_parser().parse_args(["gateway", "-bind", "127.0.0.1:1"]))
    with pytest.raises(Raised):
        await run_gateway(settings)
    assert calls == [2 * settings.gateway.max_connections]
