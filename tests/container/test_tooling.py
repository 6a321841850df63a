"""Tooling that needs no image: the health check script (against a loopback HTTP server) and
the network rule every podman call obeys."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from tools.container import check_network_mode, check_podman_args
from tools.container import healthcheck as hc
from tools.container._engine import ContainerError


class _Status:
    body = b'"127.0.0.1:8300"'
    status = 200


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path != "/v1/status/leader":
            self.send_error(404)
            return
        self.send_response(_Status.status)
        self.end_headers()
        self.wfile.write(_Status.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def agent_addr() -> Iterator[str]:
    _Status.body, _Status.status = b'"127.0.0.1:8300"', 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_healthy_when_the_agent_reports_a_leader(agent_addr: str) -> None:
    assert hc.check(agent_addr) == (
        True,
        f"http://{agent_addr}/v1/status/leader: leader 127.0.0.1:8300",
    )
    assert hc.check(f"http://{agent_addr}")[0]


def test_unhealthy_without_a_leader(agent_addr: str) -> None:
    _Status.body = b'""'
    healthy, reason = hc.check(agent_addr)
    assert not healthy
    assert "no leader yet" in reason


def test_unhealthy_on_an_answer_that_is_not_json(agent_addr: str) -> None:
    _Status.body = b"<html>"
    healthy, reason = hc.check(agent_addr)
    assert not healthy
    assert "not a JSON string" in reason


def test_unhealthy_on_an_http_error(agent_addr: str) -> None:
    _Status.status = 500
    assert hc.check(agent_addr)[0] is False


def test_a_fallback_address_is_tried_after_a_dead_one(agent_addr: str) -> None:
    healthy, reason = hc.check(f"127.0.0.1:1,{agent_addr}")
    assert healthy
    assert agent_addr in reason


def test_a_dead_agent_is_unhealthy_and_says_where_it_looked() -> None:
    healthy, reason = hc.check("127.0.0.1:1", timeout=1.0)
    assert not healthy
    assert reason.startswith("no answer from http://127.0.0.1:1/v1/status/leader")


@pytest.mark.parametrize("addr", ["nonsense", "127.0.0.1:notaport", "ftp://h:1", ":8500"])
def test_a_malformed_address_is_a_clear_unhealthy_reason(addr: str) -> None:
    healthy, reason = hc.check(addr)
    assert not healthy
    assert reason.startswith("WANFED_HTTP_ADDR must be [http[s]://]host:port")


@pytest.mark.parametrize("mode", ["none", "host", "ns:/run/netns/wanfed-dc1"])
def test_allowed_network_modes(mode: str) -> None:
    assert check_network_mode(mode) == mode


@pytest.mark.parametrize("mode", ["bridge", "podman", "", "ns:relative", "slirp4netns", "private"])
def test_every_other_network_mode_is_refused(mode: str) -> None:
    with pytest.raises(ContainerError, match="never the default bridge"):
        check_network_mode(mode)


@pytest.mark.parametrize(
    "args",
    [
        ("run", "--rm", "img"),
        ("create", "img"),
        ("build", "--tag", "t", "."),
        ("run", "--network", "bridge", "img"),
        ("run", "--network=slirp4netns", "img"),
        ("run", "--network", "none", "--network", "podman", "img"),
    ],
)
def test_run_create_and_build_need_an_explicit_allowed_network(args: tuple[str, ...]) -> None:
    with pytest.raises(ContainerError):
        check_podman_args(args)


@pytest.mark.parametrize(
    "args",
    [
        ("run", "--network", "host", "img"),
        ("build", "--network=none", "."),
        ("images",),
        ("rm", "--force", "x"),
        (),
    ],
)
def test_other_commands_and_allowed_networks_pass(args: tuple[str, ...]) -> None:
    check_podman_args(args)
