"""One fuzz target per decoder of untrusted bytes, with the errors each may raise.

A target takes arbitrary bytes, hands them to one decoder the way the product
does, and swallows only the decoder's own refusal (``ProtoError``,
``GossipDecodeError``, ``HttpError``, ``ConfigError``, ``SnapshotFormatError``
...). Anything else that escapes is a finding: the product would answer it
with a traceback, a 500 or a dead connection task. Where a decoder accepts its
input, the target checks what must then hold (a restored snapshot snapshots
back byte for byte, a frame stays under its cap, ...).

Each target also names seed inputs: valid encodings the fuzzer starts from,
so it explores the states behind the first length check instead of only
guessing at them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import ssl
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import msgspec

__all__ = ["REPEAT", "TARGETS", "Target", "with_repetition"]

REPEAT = b"\xfe\xfe"
"""An input that starts with this is also tried expanded: ``REPEAT``, a two-byte
count, a one-byte unit length, the unit, then the tail → unit × count + tail.
Nesting a thousand levels deep takes a kilobyte that random mutation never
assembles; a repetition lets the fuzzer reach it by changing two bytes."""


@dataclass(frozen=True)
class Target:
    name: str
    what: str
    run: Callable[[bytes], None]
    seeds: Callable[[], list[bytes]] = field(default=list)

    def all_seeds(self) -> list[bytes]:
        """The target's own seeds plus the repetition seeds every target gets."""
        return [*self.seeds(), *_repetition_seeds()]


def expand(data: bytes) -> bytes | None:
    """The expanded form of a repetition input (see :data:`REPEAT`), else None."""
    if not data.startswith(REPEAT) or len(data) < 5:
        return None
    count = int.from_bytes(data[2:4], "big") % 8192
    size = data[4] % 16 + 1
    unit, tail = data[5 : 5 + size], data[5 + size :]
    return unit * count + tail


def with_repetition(run: Callable[[bytes], None]) -> Callable[[bytes], None]:
    """``run`` on the input as it is and, for a repetition input, expanded too."""

    def run_both(data: bytes) -> None:
        run(data)
        expanded = expand(data)
        if expanded is not None:
            run(expanded)

    return run_both


def _repetition_seeds() -> list[bytes]:
    """Three levels of msgpack arrays and maps and of JSON arrays, as repetitions."""
    return [
        REPEAT + b"\x00\x03\x00" + b"\x91" + b"\xc0",
        REPEAT + b"\x00\x03\x02" + b"\x81\xa1k" + b"\xc0",
        REPEAT + b"\x00\x03\x00" + b"[" + b"]]]",
    ]


# --- wanfed_proto: frames, envelopes, the sniff, the ClientHello --------------------------


def _frames(data: bytes) -> None:
    from wanfed_proto import FrameDecoder, FrameTooLargeError

    decoder = FrameDecoder(max_size=1024)
    cut = data[0] % (len(data) + 1) if data else 0
    try:
        for chunk in (data[:cut], data[cut:]):
            decoder.feed(chunk)
            for frame in decoder.frames():
                assert len(frame) <= 1024
    except FrameTooLargeError:
        return
    assert decoder.buffered < 4 + 1024


def _frame_seeds() -> list[bytes]:
    from wanfed_proto import encode_frame

    return [encode_frame(b"hello", max_size=1024) * 2, b"\x00\x00\x00\x00"]


def _envelope_seeds() -> list[bytes]:
    from wanfed_proto import Request, Response, encode_request, encode_response

    body = msgspec.Raw(msgspec.msgpack.encode({"Datacenter": "dc1", "Node": "n1"}))
    return [
        encode_request(Request(Seq=1, Method="Catalog.Register", Body=body, Token="t")),
        encode_response(Response(Seq=1, Body=body)),
        encode_response(Response(Seq=2, Error="rpc: can't find method X")),
    ]


def _rpc_request(data: bytes) -> None:
    from wanfed_proto import EnvelopeError, decode_request

    with contextlib.suppress(EnvelopeError):
        decode_request(data)


def _rpc_response(data: bytes) -> None:
    from wanfed_proto import EnvelopeError, decode_response

    with contextlib.suppress(EnvelopeError):
        decode_response(data)


def _rpc_streams(data: bytes) -> None:
    """Both connection cores on a byte stream: they report violations, never raise."""
    from wanfed_proto import ProtocolViolation, RpcClientConnection, RpcServerConnection

    server = RpcServerConnection(max_frame=4096)
    client = RpcClientConnection(max_frame=4096)
    for _ in range(3):
        client.send_request("Status.Ping")
    for events in (server.receive_data(data), client.receive_data(data)):
        violations = [e for e in events if isinstance(e, ProtocolViolation)]
        assert len(violations) <= 1
        assert not violations or events[-1] is violations[0]


def _rpc_stream_seeds() -> list[bytes]:
    from wanfed_proto import encode_frame

    return [b"".join(encode_frame(e, max_size=4096) for e in _envelope_seeds())]


def _sniff(data: bytes) -> None:
    from wanfed_proto import NATIVE_TLS, RpcType, UnknownRpcTypeError, classify

    for byte in data[:8]:
        kind = classify(byte)
        assert kind is NATIVE_TLS or isinstance(kind, RpcType)
    with contextlib.suppress(UnknownRpcTypeError):
        classify(int.from_bytes(data[:2], "big", signed=True))


def _client_hello(data: bytes) -> None:
    from wanfed_proto import (
        ClientHello,
        ClientHelloParser,
        HelloError,
        InvalidNameError,
        parse_server_sni,
    )

    parser = ClientHelloParser(max_size=4096)
    cut = data[0] % (len(data) + 1) if data else 0
    try:
        for chunk in (data[:cut], data[cut:]):
            result = parser.feed(chunk)
            assert parser.buffered <= parser.max_size
            if isinstance(result, ClientHello):
                if result.server_name is not None:
                    with contextlib.suppress(InvalidNameError):
                        parse_server_sni(result.server_name, "consul")
                return
    except HelloError:
        return


def _hello_seeds() -> list[bytes]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["wanfed/rpc-multi", "wanfed/raft"])
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = context.wrap_bio(incoming, outgoing, server_hostname="s1.server.dc1.consul")
    with contextlib.suppress(ssl.SSLWantReadError):
        client.do_handshake()
    hello = outgoing.read()
    return [b"\x00" + hello, bytes([len(hello) // 2 % 256]) + hello]


# --- wanfed_agent: gossip packets and streams, plain, compressed and encrypted -------------

_KEY = bytes(range(32))


def _ring() -> Any:
    from wanfed_agent.gossip import Keyring

    return Keyring([_KEY])


def _compressed(data: bytes) -> bytes:
    """``data`` as the buffer of a compress message (LZW), the way a peer sends one."""
    from wanfed_agent.gossip import _msgpack

    return bytes([9]) + _msgpack.encode({"Algo": 0, "Buf": data})


def _membership() -> Any:
    from wanfed_agent.gossip import Membership, fast_profile

    return Membership(fast_profile("me", "127.0.0.1", 8302), now=0.0, seed=1)


def _gossip_packet(data: bytes) -> None:
    from wanfed_agent.gossip import GossipDecodeError, decode_packet

    ring = _ring()
    for packet, keyring in (
        (data, None),
        (_compressed(data), None),
        (ring.encrypt(data), ring),
        (data, ring),
    ):
        with contextlib.suppress(GossipDecodeError):
            decode_packet(packet, keyring)
    core = _membership()
    core.handle_packet(data, ("127.0.0.9", 9), 1.0)
    core.handle_packet(_compressed(data), ("127.0.0.9", 9), 2.0)


def _gossip_stream(data: bytes) -> None:
    from wanfed_agent.gossip import GossipDecodeError, StreamMessageReader, read_stream_message

    ring = _ring()
    for stream, keyring in (
        (data, None),
        (_compressed(data), None),
        (ring.seal_stream(data), ring),
        (data, ring),
    ):
        with contextlib.suppress(GossipDecodeError):
            read_stream_message(stream, keyring)
    reader = StreamMessageReader(ring)
    with contextlib.suppress(GossipDecodeError):
        reader.feed(data)
    _membership().handle_stream(data, ("127.0.0.9", 9), 1.0)


def _gossip_seeds() -> list[bytes]:
    from wanfed_agent.gossip import (
        Alive,
        NodeStateKind,
        Ping,
        PushNodeState,
        PushPull,
        Suspect,
        encode_compound,
        encode_message,
        encode_push_pull,
        with_crc,
    )

    lo, vsn = bytes((127, 0, 0, 1)), bytes((1, 5, 2, 0, 0, 0))
    ping = encode_message(Ping(seq_no=1, node="a", source_addr=lo, source_port=1, source_node="b"))
    alive = encode_message(Alive(incarnation=6, node="a", addr=lo, port=3, meta=b"m", vsn=vsn))
    suspect = encode_message(Suspect(incarnation=5, node="a", from_="b"))
    state = PushNodeState(
        name="a", addr=lo, port=1, incarnation=1, state=NodeStateKind.ALIVE, vsn=vsn
    )
    return [
        ping,
        alive,
        with_crc(encode_compound([ping, alive, suspect])),
        encode_push_pull(PushPull(join=True, states=(state,), user_state=b"u")),
        bytes.fromhex("000102030405060708090a0b0c0d0e0f"),  # LZW-looking noise
    ]


def _gossip_tags(data: bytes) -> None:
    from wanfed_agent.gossip import GossipDecodeError, decode_tags

    with contextlib.suppress(GossipDecodeError):
        decode_tags(data)


def _tag_seeds() -> list[bytes]:
    from wanfed_agent.gossip import encode_tags

    return [encode_tags({"dc": "dc1", "role": "consul", "port": "8300"})]


# --- wanfed_server: HTTP bodies and query strings, RPC bodies of every endpoint ------------


def _http_body(data: bytes) -> None:
    from wanfed_server.http import HttpError
    from wanfed_server.http._body import canonical_keys, decode_json
    from wanfed_server.http._catalog import _FIELD_NAMES, _register_request
    from wanfed_server.local_agent import DefinitionError, parse_service_definition

    try:
        body = decode_json(data)
    except HttpError as error:
        if error.status != 400:
            raise
        return
    canonical_keys(body, _FIELD_NAMES)
    with contextlib.suppress(HttpError, msgspec.ValidationError):
        _register_request(body, "dc1", "")
    with contextlib.suppress(DefinitionError):
        parse_service_definition(body)


def _http_body_seeds() -> list[bytes]:
    return [
        json.dumps(
            {
                "Node": "n1",
                "Address": "198.18.0.1",
                "NodeMeta": {"k": "v"},
                "Service": {"Service": "web", "Port": 80, "Tags": ["a"]},
                "Checks": [{"CheckID": "c", "TTL": "10s", "ServiceID": "web"}],
            }
        ).encode(),
        b'{"Name":"web","Port":80,"Check":{"TCP":"127.0.0.1:80","Interval":"10s"}}',
    ]


def _http_query(data: bytes) -> None:
    from aiohttp.test_utils import make_mocked_request

    from wanfed_server.http import HttpError
    from wanfed_server.http._query import parse_query

    pairs = [part.partition(b"=") for part in data.split(b"&")]
    query = "&".join(
        urllib.parse.quote(key, safe="") + ("=" + urllib.parse.quote(value, safe="") if eq else "")
        for key, eq, value in pairs
    )
    request = make_mocked_request("GET", "/v1/catalog/nodes?" + query)
    try:
        params = parse_query(request, "dc1")
    except HttpError as error:
        if error.status != 400:
            raise
        return
    assert 0 <= params.min_query_index < 2**64


def _query_seeds() -> list[bytes]:
    return [b"dc=dc2&index=12&wait=5s&stale&token=t", b"consistent&wait=1m30s&index=0"]


class _EndpointContext:
    """A one-server dc1 over an in-memory consensus (the real endpoints run on it)."""

    def __init__(self) -> None:
        from wanfed_fsm import LocalConsensus
        from wanfed_server.runtime import ServerInfo, StaticRouter

        self.consensus = LocalConsensus()
        self.router = StaticRouter("dc1", {})
        self.datacenter = "dc1"
        self.primary_datacenter = "dc1"
        self.me = ServerInfo(node="s1", datacenter="dc1", rpc_address="127.0.0.1:8300")

    @property
    def store(self) -> Any:
        return self.consensus.store

    def last_contact(self) -> float:
        return 0.0

    def leader_rpc_address(self) -> str | None:
        return self.me.rpc_address

    def peer_rpc_addresses(self) -> list[str]:
        return [self.me.rpc_address]

    def cluster_info(self) -> Any:
        from wanfed_server.runtime import ClusterInfo

        return ClusterInfo(server=self.me)

    def learn_server(self, server: Any) -> None:
        pass

    async def add_raft_server(self, server: Any) -> Any:
        return self.cluster_info()

    def is_server_node(self, node: str) -> bool:
        return node.lower() == "s1"


class _NoDialer:
    async def dial(self, *args: object, **kwargs: object) -> Any:
        raise AssertionError("a one-node datacenter never dials")


def _handlers(context: _EndpointContext) -> dict[str, Any]:
    from wanfed_agent.rpc import RouteTable, RpcPool
    from wanfed_agent.tls import ServerCertificatePolicy
    from wanfed_server.runtime import Dispatcher
    from wanfed_server.runtime._endpoints_catalog import catalog_endpoints
    from wanfed_server.runtime._endpoints_federation import federation_state_endpoints
    from wanfed_server.runtime._endpoints_status import status_endpoints

    policy = ServerCertificatePolicy("consul")
    endpoints = [
        *status_endpoints(context, datacenter="dc1", policy=policy),
        *catalog_endpoints(context, context),
        *federation_state_endpoints(context, policy),
    ]
    dispatcher = Dispatcher(
        datacenter="dc1",
        endpoints=endpoints,
        is_leader=lambda: True,
        leader=lambda: context.me,
        router=context.router,
        pool=RpcPool(_NoDialer(), RouteTable("dc1")),
        hold_timeout=0.05,
    )
    return dict(dispatcher.rpc_handlers())


_runner: asyncio.Runner | None = None


@functools.cache
def _methods() -> list[str]:
    return sorted(_handlers(_EndpointContext()))


@contextlib.contextmanager
def _short_blocking_waits() -> Iterator[None]:
    """Blocking queries wait at most 10 ms: a query that parks is correct, not a hang."""
    from wanfed_fsm import QueryOptions, blocking_query
    from wanfed_server.runtime import _endpoint

    async def short(store: Any, options: QueryOptions, *args: Any, **kw: Any) -> Any:
        options = msgspec.structs.replace(options, max_query_time=0.01)
        return await blocking_query(store, options, *args, **kw)

    with mock.patch.object(_endpoint, "blocking_query", short):
        yield


async def _call_endpoint(method: str, body: bytes) -> None:
    from wanfed_proto import ConnectionInfo, RemoteError, Request, RpcCall

    context = _EndpointContext()
    handler = _handlers(context)[method]
    call = RpcCall(
        request=Request(Seq=1, Method=method, Body=msgspec.Raw(body)),
        peer=ConnectionInfo(peer=("127.0.0.1", 1)),
    )
    try:
        async with asyncio.timeout(5):
            await handler(call)
    except RemoteError:  # InvalidRequestError included: a refusal, as on the wire
        pass
    finally:
        await context.consensus.shutdown()


def _rpc_bodies(data: bytes) -> None:
    """First byte picks the method of the endpoint table; the rest is its body."""
    global _runner
    if not data:
        return
    if _runner is None:
        _runner = asyncio.Runner()
    methods = _methods()
    method = methods[data[0] % len(methods)]
    with _short_blocking_waits():
        _runner.run(_call_endpoint(method, data[1:]))


def _rpc_body_seeds() -> list[bytes]:
    bodies = {
        "Catalog.Register": {"Node": {"Node": "n1", "Address": "198.18.0.1"}},
        "Catalog.ListNodes": {"Datacenter": "dc1", "MinQueryIndex": 1, "MaxQueryTime": 0.01},
        "Health.ServiceNodes": {"ServiceName": "web", "PassingOnly": True},
        "FederationState.Apply": {"Op": "upsert", "State": {"Datacenter": "dc2"}},
        "Status.Hello": {"Node": "s2", "Datacenter": "dc1", "RpcAddress": "127.0.0.1:1"},
    }
    return [
        bytes([_methods().index(method)]) + msgspec.msgpack.encode(body)
        for method, body in bodies.items()
        if method in _methods()
    ]


# --- config files -------------------------------------------------------------------------


def _config_json(data: bytes) -> None:
    from wanfed_agent.config import ConfigError, load_config
    from wanfed_agent.config._files import _parse_json

    try:
        parsed = _parse_json(data.decode("utf-8"), "fuzz.json")
        load_config(overrides=parsed, check_tls_files=False)
    except (ConfigError, UnicodeDecodeError):
        return


def _config_hcl(data: bytes) -> None:
    from wanfed_agent.config import ConfigError, load_config

    try:
        load_config(hcl=[data.decode("utf-8")], check_tls_files=False)
    except (ConfigError, UnicodeDecodeError):
        return


def _config_seeds(hcl: bool) -> list[bytes]:
    if hcl:
        return [
            b'datacenter = "dc2"\nprimary_datacenter = "dc1"\nserver = true\n'
            b"ports { server = 8300 }\ntls { defaults { verify_incoming = true } }\n"
            b"connect { enable_mesh_gateway_wan_federation = true }\n"
            b'primary_gateways = ["198.18.0.1:8443"]\n'
        ]
    return [
        json.dumps(
            {
                "datacenter": "dc2",
                "server": True,
                "ports": {"server": 8300, "http": 8500},
                "retry_join": ["198.18.0.2"],
                "encrypt": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
                "limits": {"http_max_conns_per_client": 200},
            }
        ).encode()
    ]


# --- wanfed_fsm: snapshots and log entries -------------------------------------------------


def _snapshot(data: bytes) -> None:
    from wanfed_fsm import SnapshotFormatError, StateStore

    store = StateStore()
    try:
        store.restore(data)
    except SnapshotFormatError:
        assert store.contents() == StateStore().contents()
        return
    again = StateStore()
    again.restore(store.snapshot())
    assert again.snapshot() == store.snapshot()


def _snapshot_seeds() -> list[bytes]:
    from wanfed_fsm import HealthCheck, Node, RegisterRequest, Service, StateStore

    store = StateStore()
    store.ensure_registration(
        1,
        RegisterRequest(
            node=Node(node="a", address="198.18.0.1"),
            service=Service(service="web", port=80),
            checks=[HealthCheck(node="a", check_id="c", service_id="web")],
        ),
    )
    return [store.snapshot(), StateStore().snapshot()]


def _fsm_command(data: bytes) -> None:
    from wanfed_fsm import CommandDecodeError, Fsm, FsmError, decode_command

    try:
        command = decode_command(data)
    except CommandDecodeError:
        return
    with contextlib.suppress(FsmError):
        Fsm()._dispatch(1, command)


def _command_seeds() -> list[bytes]:
    from wanfed_fsm import Node, Register, RegisterRequest, encode_command

    return [encode_command(Register(request=RegisterRequest(node=Node(node="a"))))]


TARGETS: dict[str, Target] = {
    target.name: target
    for target in [
        Target("frames", "length-prefixed RPC frames", _frames, _frame_seeds),
        Target("rpc-request", "RPC request envelopes", _rpc_request, _envelope_seeds),
        Target("rpc-response", "RPC response envelopes", _rpc_response, _envelope_seeds),
        Target("rpc-streams", "RPC connection cores", _rpc_streams, _rpc_stream_seeds),
        Target("rpc-bodies", "RPC bodies of every endpoint", _rpc_bodies, _rpc_body_seeds),
        Target("sniff", "first-byte sniff of the RPC port", _sniff, lambda: [b"\x16\x03", b"\x08"]),
        Target("client-hello", "TLS ClientHello parser + SNI names", _client_hello, _hello_seeds),
        Target("gossip-packet", "gossip packets (LZW, sealed too)", _gossip_packet, _gossip_seeds),
        Target("gossip-stream", "gossip streams (LZW, sealed too)", _gossip_stream, _gossip_seeds),
        Target("gossip-tags", "gossip member tags", _gossip_tags, _tag_seeds),
        Target("http-body", "HTTP JSON bodies (catalog, agent)", _http_body, _http_body_seeds),
        Target("http-query", "HTTP query strings", _http_query, _query_seeds),
        Target("config-json", "JSON config files", _config_json, lambda: _config_seeds(False)),
        Target("config-hcl", "HCL config files", _config_hcl, lambda: _config_seeds(True)),
        Target("snapshot", "state snapshots (restore)", _snapshot, _snapshot_seeds),
        Target("fsm-command", "Raft log entries (FSM commands)", _fsm_command, _command_seeds),
    ]
}  # fmt: skip
