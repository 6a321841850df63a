"""One attempt of an outsider against a server or a gateway, run inside its namespace.

An outsider is a machine on a datacenter's network that is neither a server nor
a gateway: what an attacker who got onto that network controls. Each attempt
speaks the real protocols with the project's own codecs (``wanfed_proto``, the
gossip messages of ``wanfed_agent``), exactly as a hostile program would, and
prints one JSON object::

    python outsider_probe.py <attempt> '<json arguments>'
    {"outcome": "refused" | "accepted" | "holding", "detail": "..."}

``accepted`` means the door opened: the server answered, or kept a
connection open that it should have closed at once. Every attempt has a
deadline, so a firewall that drops packets makes it end as ``refused``
(timed out), never hang. ``hold`` is the exception: it opens many idle
connections, prints ``holding`` and keeps them until it is terminated, then
prints how many the other side closed meanwhile.

Credentials are the ``ca``, ``cert`` and ``key`` arguments: the CA certificate
is public; ``cert``/``key`` absent means the outsider holds nothing, present
means a leaked *client* certificate. It never holds a server certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import ssl
import sys
from collections.abc import Callable, Coroutine
from typing import Any, Final

import msgspec

import wanfed_proto as wp
from wanfed_agent.gossip import (
    Alive,
    GossipError,
    IncompleteMessage,
    MessageType,
    Ping,
    PushNodeState,
    PushPull,
    decode_packet,
    encode_compound,
    encode_message,
    encode_push_pull,
    encode_tags,
    read_stream_message,
    wan_profile,
)

__all__ = ["ATTEMPTS", "main"]

DIAL_DEADLINE: Final = 3.0
"""Seconds for a TCP connect or a TLS handshake: a dropped SYN ends here."""
ANSWER_DEADLINE: Final = 4.0
"""Seconds for an answer once connected."""
HELD_OPEN: Final = 2.0
"""A connection a server should refuse is closed at once; one still open after
this long was admitted (the raft and gossip-packet handlers wait far longer
for their peer: 5 s for a raft hello, two minutes for the next packet)."""
_PROFILE: Final = wan_profile("probe.probe", "127.0.0.1", 1)
GOSSIP_VSN: Final = bytes((1, 5, _PROFILE.protocol_version, *_PROFILE.delegate_versions))
"""Protocol versions as a real server sends them (memberlist speaks 1 to 5), so no
version check turns the fake member away."""

Result = dict[str, str]


def refused(detail: str) -> Result:
    return {"outcome": "refused", "detail": detail}


def accepted(detail: str) -> Result:
    return {"outcome": "accepted", "detail": detail}


def _tls_context(args: dict[str, Any], alpn: str) -> ssl.SSLContext:
    """The outsider's context: the public CA, and the leaked client certificate if any."""
    return wp.client_context(args["ca"], args.get("cert"), args.get("key"), alpn=[alpn])


def _text(exc: BaseException) -> str:
    return wp.error_text(exc)


def _fake_member(args: dict[str, Any]) -> tuple[str, bytes, bytes]:
    """A WAN member ``<node>.<fake dc>`` that says it is a server, at the outsider's address."""
    name = f"{args.get('node', 'evil')}.{args['fake_dc']}"
    tags = {
        "role": "consul",
        "dc": args["fake_dc"],
        "port": "8300",
        "expect": "1",
        "build": "wanfed",
        "vsn": "2",
        "ft_fs": "1",
        "wan_join_port": "8302",
    }
    return name, socket.inet_aton(args["me"]), encode_tags(tags)


# --- direct doors of a server -------------------------------------------------------


async def plain_rpc(args: dict[str, Any]) -> Result:
    """Plain (type byte ``MULTIPLEX_V2``, no TLS) RPC to a server's RPC port: ``Status.Ping``."""
    try:
        connection = await wp.dial_plain(args["address"], wp.RpcType.MULTIPLEX_V2, DIAL_DEADLINE)
    except wp.ProtoError as exc:
        return refused(f"dial: {_text(exc)}")
    return await _call(connection, args.get("method", "Status.Ping"), args.get("body"))


async def tls_rpc(args: dict[str, Any]) -> Result:
    """TLS + ALPN ``wanfed/rpc-multi`` with SNI ``sni`` to ``address``, then one call.

    Under TLS 1.3 a server that refuses the (missing) client certificate shows
    it at the first read, so the call, not the dial, is where that refusal lands.
    """
    try:
        connection = await wp.dial_alpn(
            args["address"],
            args["sni"],
            wp.Alpn.RPC_MULTI,
            _tls_context(args, wp.Alpn.RPC_MULTI),
            DIAL_DEADLINE,
        )
    except wp.ProtoError as exc:
        return refused(f"dial: {_text(exc)}")
    return await _call(connection, args["method"], args.get("body"))


async def _call(connection: wp.Connection, method: str, body: Any) -> Result:
    try:
        async with wp.RpcClient(connection) as client:
            result = await client.call(method, body, timeout=ANSWER_DEADLINE)
    except wp.RemoteError as exc:
        return refused(f"{method}: server said {_text(exc)}")
    except (wp.ProtoError, TimeoutError, OSError) as exc:
        return refused(f"{method}: {type(exc).__name__}: {_text(exc)}")
    finally:
        connection.abort()
    return accepted(f"{method} answered {json.dumps(msgspec.to_builtins(result))[:200]}")


async def http(args: dict[str, Any]) -> Result:
    """``GET /v1/status/leader`` on a server's HTTP port."""
    host, port = wp.parse_address(args["address"])
    try:
        async with asyncio.timeout(DIAL_DEADLINE + ANSWER_DEADLINE):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(f"GET /v1/status/leader HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            status = await reader.readline()
            writer.close()
    except (OSError, TimeoutError) as exc:
        return refused(f"{type(exc).__name__}: {_text(exc)}")
    if not status:
        return refused("connection closed without an answer")
    return accepted(f"answered {status.decode(errors='replace').strip()}")


async def tcp_connect(args: dict[str, Any]) -> Result:
    """A bare TCP connect (a port the outsider should not even reach)."""
    host, port = wp.parse_address(args["address"])
    try:
        async with asyncio.timeout(DIAL_DEADLINE):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError) as exc:
        return refused(f"{type(exc).__name__}: {_text(exc)}")
    writer.close()
    return accepted("TCP connection established")


# --- gossip -------------------------------------------------------------------------


async def udp_gossip(args: dict[str, Any]) -> Result:
    """Unencrypted UDP to a gossip port: an alive for a fake member of a fake
    datacenter, and a ping; an ack proves the server reads unencrypted packets."""
    host, port = wp.parse_address(args["address"])
    name, addr, meta = _fake_member(args)
    alive = Alive(incarnation=1, node=name, addr=addr, port=8302, meta=meta, vsn=GOSSIP_VSN)
    seq = 4242
    packet = encode_compound([encode_message(alive), encode_message(Ping(seq_no=seq))])
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    try:
        sock.bind((args["me"], 0))
        await loop.sock_sendto(sock, packet, (host, port))
        async with asyncio.timeout(ANSWER_DEADLINE):
            while True:
                data = await loop.sock_recv(sock, 65536)
                try:
                    messages = decode_packet(data, None)
                except GossipError as exc:  # an undecodable answer is still an answer
                    return accepted(f"answered {len(data)} bytes that are not plain gossip ({exc})")
                if any(getattr(m, "seq_no", None) == seq for m in messages):
                    return accepted(f"unencrypted ping acked; alive for {name} sent along")
    except TimeoutError:
        return refused(f"no answer within {ANSWER_DEADLINE:g} s")
    except OSError as exc:
        return refused(f"{type(exc).__name__}: {_text(exc)}")
    finally:
        sock.close()


def _push_pull(args: dict[str, Any]) -> bytes:
    name, addr, meta = _fake_member(args)
    state = PushNodeState(name=name, addr=addr, port=8302, meta=meta, incarnation=1, vsn=GOSSIP_VSN)
    return encode_push_pull(PushPull(join=True, states=(state,)))


async def _exchange(reader: asyncio.StreamReader, what: str) -> Result:
    """The server's reply to a push/pull: its own state is acceptance; an error
    message, a close, silence or a sealed reply (a server with a gossip key seals
    the error it sends to an unsealed request) is refusal."""
    data = b""
    try:
        async with asyncio.timeout(ANSWER_DEADLINE):
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                data += chunk
                if data[0] == MessageType.ENCRYPT:
                    return refused(f"{what}: the server answered sealed (it has a gossip key)")
                try:
                    reply, _ = read_stream_message(data, None)
                except IncompleteMessage:
                    continue
                if isinstance(reply, PushPull):
                    return accepted(
                        f"{what}: the server sent its state ({len(reply.states)} members)"
                    )
                return refused(f"{what}: the server answered {reply!r}")
    except TimeoutError:
        return refused(f"{what}: no reply within {ANSWER_DEADLINE:g} s")
    except (OSError, wp.ProtoError) as exc:
        return refused(f"{what}: {type(exc).__name__}: {_text(exc)}")
    except GossipError as exc:
        return refused(f"{what}: an unreadable reply ({exc})")
    return refused(f"{what}: closed after {len(data)} bytes, no state")


async def tcp_gossip(args: dict[str, Any]) -> Result:
    """Unencrypted TCP gossip stream: a join push/pull carrying the fake member."""
    host, port = wp.parse_address(args["address"])
    try:
        async with asyncio.timeout(DIAL_DEADLINE):
            reader, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError) as exc:
        return refused(f"{type(exc).__name__}: {_text(exc)}")
    try:
        writer.write(_push_pull(args))
        return await _exchange(reader, "push/pull")
    finally:
        writer.close()


async def _alpn_connection(args: dict[str, Any], alpn: str) -> wp.Connection | Result:
    try:
        return await wp.dial_alpn(
            args["address"], args["sni"], alpn, _tls_context(args, alpn), DIAL_DEADLINE
        )
    except wp.ProtoError as exc:
        return refused(f"dial: {_text(exc)}")


async def _still_open(reader: asyncio.StreamReader, what: str) -> Result:
    try:
        async with asyncio.timeout(HELD_OPEN):
            data = await reader.read(1)
    except TimeoutError:
        return accepted(f"{what}: connection kept open {HELD_OPEN:g} s after it")
    except (OSError, wp.ProtoError) as exc:
        return refused(f"{what}: {type(exc).__name__}: {_text(exc)}")
    if not data:
        return refused(f"{what}: the server closed the connection")
    return accepted(f"{what}: the server answered")


async def gossip_packet_alpn(args: dict[str, Any]) -> Result:
    """``wanfed/wan-gossip/packet`` through the gateway: one framed alive of the fake member."""
    connection = await _alpn_connection(args, wp.Alpn.WAN_GOSSIP_PACKET)
    if isinstance(connection, dict):
        return connection
    reader, writer = connection.open_streams()
    name, addr, meta = _fake_member(args)
    alive = Alive(incarnation=1, node=name, addr=addr, port=8302, meta=meta, vsn=GOSSIP_VSN)
    try:
        await wp.write_packet(writer, encode_message(alive))
        return await _still_open(reader, f"alive for {name}")
    except (OSError, wp.ProtoError) as exc:
        return refused(f"write: {type(exc).__name__}: {_text(exc)}")
    finally:
        connection.abort()


async def gossip_stream_alpn(args: dict[str, Any]) -> Result:
    """``wanfed/wan-gossip/stream`` through the gateway: a join push/pull with the fake member."""
    connection = await _alpn_connection(args, wp.Alpn.WAN_GOSSIP_STREAM)
    if isinstance(connection, dict):
        return connection
    reader, writer = connection.open_streams()
    try:
        writer.write(_push_pull(args))
        return await _exchange(reader, "push/pull")
    finally:
        connection.abort()


async def raft_alpn(args: dict[str, Any]) -> Result:
    """``wanfed/raft``: the first frame names a real peer (``peer``), as a server's dialer does.

    Raft frames are pickles: admitted here, the next frame would be unpickled,
    so being held open after the hello is already the failure. Nothing more is sent.
    """
    connection = await _alpn_connection(args, wp.Alpn.RAFT)
    if isinstance(connection, dict):
        return connection
    reader, writer = connection.open_streams()
    try:
        writer.write(wp.encode_frame(args["peer"].encode()))
        return await _still_open(reader, f"raft hello as {args['peer']}")
    finally:
        connection.abort()


# --- the gateway's own door ---------------------------------------------------------


def _client_hello(sni: str, alpn: str) -> bytes:
    """The bytes of a real TLS ClientHello naming ``sni``: what a gateway routes on."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols([alpn])
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=sni)
    with contextlib.suppress(ssl.SSLWantReadError):  # it waits for a ServerHello
        tls.do_handshake()
    return outgoing.read()


async def unrouted_sni(args: dict[str, Any]) -> Result:
    """A TLS handshake whose SNI is in no route table: any server answer is a route."""
    host, port = wp.parse_address(args["address"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        async with asyncio.timeout(DIAL_DEADLINE + ANSWER_DEADLINE):
            _, writer = await asyncio.open_connection(
                host, port, ssl=context, server_hostname=args["sni"]
            )
    except (OSError, TimeoutError) as exc:
        return refused(f"{type(exc).__name__}: {_text(exc)}")
    writer.close()
    return accepted(f"TLS handshake for SNI {args['sni']} completed")


async def hello_then_plain(args: dict[str, Any]) -> Result:
    """A ClientHello naming a server (so the gateway routes it), then plain RPC bytes:
    type byte ``MULTIPLEX_V2`` and a ``Status.Ping`` request, hoping the server
    sniffs them as a plain client. Anything but TLS records back is acceptance."""
    host, port = wp.parse_address(args["address"])
    _, request = wp.RpcClientConnection().send_request("Status.Ping", wp.NIL_BODY)
    payload = (
        _client_hello(args["sni"], wp.Alpn.RPC_MULTI) + bytes([wp.RpcType.MULTIPLEX_V2]) + request
    )
    try:
        async with asyncio.timeout(DIAL_DEADLINE):
            reader, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError) as exc:
        return refused(f"{type(exc).__name__}: {_text(exc)}")
    try:
        writer.write(payload)
        async with asyncio.timeout(ANSWER_DEADLINE):
            data = await reader.read(5)
    except TimeoutError:
        return refused(f"no answer within {ANSWER_DEADLINE:g} s")
    except OSError as exc:
        return refused(f"{type(exc).__name__}: {_text(exc)}")
    finally:
        writer.close()
    if not data:
        return refused("closed without an answer")
    if data[0] in (20, 21, 22, 23):  # a TLS record: the server kept speaking TLS
        return refused(f"the server answered in TLS only (record type {data[0]}), then closed")
    return accepted(f"answered plain bytes {data.hex()}")


async def hold(args: dict[str, Any]) -> Result:
    """Open ``count`` idle TCP connections to ``address`` and keep them until SIGTERM."""
    host, port = wp.parse_address(args["address"])
    count = int(args["count"])
    writers: list[asyncio.StreamWriter] = []
    readers: list[asyncio.StreamReader] = []
    failed: list[str] = []
    for _ in range(count):
        try:
            async with asyncio.timeout(DIAL_DEADLINE):
                reader, writer = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError) as exc:
            failed.append(type(exc).__name__)
            continue
        readers.append(reader)
        writers.append(writer)
    print(
        json.dumps({"outcome": "holding", "detail": f"{len(writers)} open, {len(failed)} failed"}),
        flush=True,
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    closed = sum(1 for reader in readers if reader.at_eof())
    for writer in writers:
        writer.close()
    return {"outcome": "held", "detail": f"{len(writers)} opened, {closed} closed by the peer"}


ATTEMPTS: Final[dict[str, Callable[[dict[str, Any]], Coroutine[Any, Any, Result]]]] = {
    "plain-rpc": plain_rpc,
    "tls-rpc": tls_rpc,
    "http": http,
    "tcp-connect": tcp_connect,
    "udp-gossip": udp_gossip,
    "tcp-gossip": tcp_gossip,
    "gossip-packet-alpn": gossip_packet_alpn,
    "gossip-stream-alpn": gossip_stream_alpn,
    "raft-alpn": raft_alpn,
    "unrouted-sni": unrouted_sni,
    "hello-then-plain": hello_then_plain,
    "hold": hold,
}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ATTEMPTS:
        print(f"usage: outsider_probe.py {{{'|'.join(ATTEMPTS)}}} '<json>'", file=sys.stderr)
        return 2
    result = asyncio.run(ATTEMPTS[argv[0]](json.loads(argv[1])))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
