"""Primary-gateway discovery: entry parsing, the dns and file providers, the loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path

import dns.message
import dns.rdatatype
import dns.rrset
import pytest

from wanfed_agent.discover import (
    DiscoveryError,
    DnsProvider,
    FileProvider,
    PrimaryGatewayDiscovery,
    load_provider,
    parse_provider_entry,
)


def test_literal_entries_are_not_provider_entries() -> None:
    assert parse_provider_entry("198.18.1.20:8443") is None
    assert parse_provider_entry("gw.dc1.example:443") is None


def test_provider_entry_parsing() -> None:
    entry = parse_provider_entry("provider=dns name=gw.dc1.example type=SRV")
    assert entry is not None
    assert entry.name == "dns"
    assert entry.args == {"name": "gw.dc1.example", "type": "SRV"}
    quoted = parse_provider_entry("provider=file 'path=/etc/wanfed/primary gateways.txt'")
    assert quoted is not None
    assert quoted.args["path"] == "/etc/wanfed/primary gateways.txt"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("provider=dns name", "expected key=value pairs"),
        ("provider= name=x", "empty provider name"),
        ("provider=dns name=a name=b", "'name' given twice"),
        ("provider=dns 'name=x", "cannot parse discovery entry"),
    ],
)
def test_bad_provider_entries(entry: str, message: str) -> None:
    with pytest.raises(DiscoveryError, match=message):
        parse_provider_entry(entry)


def test_builtin_providers_are_entry_points_and_unknown_ones_are_named() -> None:
    assert isinstance(load_provider("dns"), DnsProvider)
    assert isinstance(load_provider("file"), FileProvider)
    with pytest.raises(DiscoveryError, match=r"unknown discovery provider 'aws'.*dns, file"):
        load_provider("aws")


async def test_file_provider_rereads_and_normalises(tmp_path: Path) -> None:
    listing = tmp_path / "gateways.txt"
    provider = FileProvider()
    assert await provider.addresses({"path": str(listing)}) == []
    listing.write_text("# primary gateways\n198.18.1.20:8443\n198.18.1.21  # spare\n[::1]:443\n\n")
    assert await provider.addresses({"path": str(listing)}) == [
        "198.18.1.20:8443",
        "198.18.1.21:8443",
        "[::1]:443",
    ]
    listing.write_text("gw.dc1.example:9443\n")
    assert await provider.addresses({"path": str(listing), "port": "443"}) == [
        "gw.dc1.example:9443"
    ]
    listing.write_text("host:notaport\n")
    with pytest.raises(DiscoveryError, match=r"gateways.txt:1: bad port"):
        await provider.addresses({"path": str(listing)})
    with pytest.raises(DiscoveryError, match="needs path="):
        await provider.addresses({})


class TinyDns(asyncio.DatagramProtocol):
    """A DNS server on loopback that answers from a fixed table."""

    def __init__(self, records: dict[tuple[str, str], list[str]]) -> None:
        self.records = records
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        question = query.question[0]
        name = question.name.to_text()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        values = self.records.get((name, rdtype), [])
        if values:
            response.answer.append(dns.rrset.from_text(name, 30, "IN", rdtype, *values))
        assert self.transport is not None
        self.transport.sendto(response.to_wire(), addr)


@pytest.fixture
async def tiny_dns() -> AsyncIterator[tuple[str, TinyDns]]:
    loop = asyncio.get_running_loop()
    server = TinyDns({})
    transport, _ = await loop.create_datagram_endpoint(lambda: server, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    try:
        yield f"127.0.0.1:{port}", server
    finally:
        transport.close()


async def test_dns_provider_a_and_srv(tiny_dns: tuple[str, TinyDns]) -> None:
    nameserver, server = tiny_dns
    server.records[("gw.dc1.example.", "A")] = ["198.18.1.21", "198.18.1.20"]
    server.records[("_gw._tcp.dc1.example.", "SRV")] = [
        "1 1 8443 gw-a.dc1.example.",
        "1 1 9443 gw-b.dc1.example.",
    ]
    provider = DnsProvider()
    args = {"name": "gw.dc1.example", "nameserver": nameserver, "port": "8443"}
    assert await provider.addresses(args) == ["198.18.1.20:8443", "198.18.1.21:8443"]
    srv = {"name": "_gw._tcp.dc1.example", "type": "SRV", "nameserver": nameserver}
    assert await provider.addresses(srv) == ["gw-a.dc1.example:8443", "gw-b.dc1.example:9443"]
    missing = {"name": "nothing.dc1.example", "nameserver": nameserver}
    assert await provider.addresses(missing) == []
    with pytest.raises(DiscoveryError, match="type must be A, AAAA or SRV"):
        await provider.addresses({"name": "x", "type": "MX"})


class Sink:
    def __init__(self) -> None:
        self.updates: list[tuple[list[str], str]] = []
        self.changed = asyncio.Event()

    async def wait_for_updates(self, count: int) -> None:
        while len(self.updates) < count:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 2)

    def refresh_fallback_addresses(
        self, addresses: Iterable[str], source: str = "configured"
    ) -> bool:
        listed = sorted(addresses)
        if self.updates and self.updates[-1][0] == listed:
            return False
        self.updates.append((listed, source))
        self.changed.set()
        return True


class CountingFiles(FileProvider):
    """The file provider, announcing each attempt so tests can wait for rounds."""

    def __init__(self) -> None:
        self.calls = 0
        self.called = asyncio.Event()

    async def addresses(self, args: Mapping[str, str]) -> list[str]:
        self.calls += 1
        self.called.set()
        return await super().addresses(args)

    async def wait_for_calls(self, count: int) -> None:
        while self.calls < count:
            self.called.clear()
            await asyncio.wait_for(self.called.wait(), 2)


async def test_literal_entries_are_handed_over_at_once() -> None:
    sink = Sink()
    discovery = PrimaryGatewayDiscovery(
        ["198.18.1.21:8443", "198.18.1.20:8443"], sink, interval=0.01
    )
    task = asyncio.create_task(discovery.run())
    await asyncio.wait_for(discovery.found.wait(), 2)
    task.cancel()
    assert sink.updates == [(["198.18.1.20:8443", "198.18.1.21:8443"], "configured")]


async def test_retries_until_found_then_rediscovers_only_when_asked(tmp_path: Path) -> None:
    listing = tmp_path / "gateways.txt"
    sink = Sink()
    broken = asyncio.Event()
    health_checks = 0

    def needs_rediscovery() -> bool:
        nonlocal health_checks
        health_checks += 1
        return broken.is_set()

    files = CountingFiles()
    discovery = PrimaryGatewayDiscovery(
        [f"provider=file path={listing}"],
        sink,
        interval=0.01,
        needs_rediscovery=needs_rediscovery,
        providers={"file": files},
    )
    task = asyncio.create_task(discovery.run())
    try:
        await files.wait_for_calls(3)  # a few empty rounds
        assert not discovery.found.is_set()
        listing.write_text("198.18.1.20:8443\n")
        await asyncio.wait_for(discovery.found.wait(), 2)
        assert sink.updates == [(["198.18.1.20:8443"], "discovered")]
        calls, checked = files.calls, health_checks
        for _ in range(6000):  # five intervals pass, each judged healthy...
            if health_checks >= checked + 5:
                break
            await asyncio.sleep(0.005)
        assert health_checks >= checked + 5
        assert files.calls == calls  # ...so discovery stays idle
        # Every primary gateway replaced; the operator updates only the file.
        listing.write_text("198.18.1.30:8443\n198.18.1.31:8443\n")
        broken.set()
        await sink.wait_for_updates(2)
        assert sink.updates[-1][0] == ["198.18.1.30:8443", "198.18.1.31:8443"]
    finally:
        task.cancel()


def test_a_non_positive_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="greater than zero seconds, got 0"):
        PrimaryGatewayDiscovery(["198.18.1.20:8443"], Sink(), interval=0)


def test_unknown_provider_fails_at_construction() -> None:
    with pytest.raises(DiscoveryError, match="unknown discovery provider 'gce'"):
        PrimaryGatewayDiscovery(["provider=gce tag_value=x"], Sink(), interval=1)
