"""Wire codec speed: frames and the ClientHello parser, each beside a same-run baseline.

Run: ``python tools/bench/proto_wire.py``. Absolute numbers depend on the
machine; the ratio column says how far each codec is from the cheapest thing
that touches the same bytes (a copy, a slice, a one-byte check) or from what
``ssl`` itself spends to start a handshake.
"""

from __future__ import annotations

import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from _common import Column, print_table

from wanfed_proto import (
    HEADER_SIZE,
    ClientHello,
    ClientHelloParser,
    FrameDecoder,
    encode_frame,
    parse_client_hello,
)

TARGET_SECONDS = 0.4
"""Per measurement; the whole run stays well under 20 s."""


@dataclass(frozen=True)
class Row:
    name: str
    ours: float
    baseline_name: str
    baseline: float
    unit: str

    @property
    def ratio(self) -> float:
        return self.ours / self.baseline if self.baseline else float("nan")


def rate(operation: Callable[[], object], work_per_call: float) -> float:
    """Work units per second, timed over enough calls to last ``TARGET_SECONDS``."""
    operation()  # warm up
    calls = 1
    while True:
        start = time.perf_counter()
        for _ in range(calls):
            operation()
        elapsed = time.perf_counter() - start
        if elapsed >= TARGET_SECONDS:
            return calls * work_per_call / elapsed
        calls = max(calls * 2, int(calls * TARGET_SECONDS / max(elapsed, 1e-6) * 1.1))


def frame_rows() -> list[Row]:
    rows: list[Row] = []
    header = b"\x00\x00\x10\x00"
    for size in (64, 4096, 65536):
        payload = bytes(range(256)) * (size // 256) if size >= 256 else b"p" * size
        count = max(1, (1 << 20) // size)  # about 1 MiB per call
        megabytes = count * size / 1e6

        def encode(payload: bytes = payload, count: int = count) -> None:
            for _ in range(count):
                encode_frame(payload)

        def concat(payload: bytes = payload, count: int = count) -> None:
            for _ in range(count):
                header + payload

        rows.append(
            Row(
                f"frame encode {size} B",
                rate(encode, megabytes),
                "header + payload concat",
                rate(concat, megabytes),
                "MB/s",
            )
        )

        stream = b"".join(encode_frame(payload) for _ in range(count))
        offsets = [(i * (HEADER_SIZE + size) + HEADER_SIZE) for i in range(count)]

        def decode(stream: bytes = stream, chunk: int = 65536) -> None:
            decoder = FrameDecoder()
            view = memoryview(stream)
            for start in range(0, len(stream), chunk):
                decoder.feed(view[start : start + chunk])
                for _ in decoder.frames():
                    pass

        def slice_frames(
            stream: bytes = stream, offsets: list[int] = offsets, size: int = size
        ) -> None:
            for offset in offsets:
                stream[offset : offset + size]

        rows.append(
            Row(
                f"frame decode {size} B (64 KiB reads)",
                rate(decode, megabytes),
                "slice known offsets",
                rate(slice_frames, megabytes),
                "MB/s",
            )
        )
    return rows


def _client_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["wanfed/rpc-multi"])
    return context


def ssl_client_hello(context: ssl.SSLContext) -> bytes:
    """What ``ssl`` spends to start a handshake: a new session and its ClientHello."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = context.wrap_bio(incoming, outgoing, server_hostname="s1.server.dc1.consul")
    try:
        client.do_handshake()
    except ssl.SSLWantReadError:
        return outgoing.read()
    raise RuntimeError("a client handshake cannot complete without a server")


def hello_rows() -> list[Row]:
    context = _client_context()
    hello = ssl_client_hello(context)
    parsed = parse_client_hello(hello)
    assert parsed.server_name == "s1.server.dc1.consul", parsed
    middle = len(hello) // 2

    def one_shot() -> None:
        parse_client_hello(hello)

    def two_reads() -> None:
        parser = ClientHelloParser()
        parser.feed(hello[:middle])
        result = parser.feed(hello[middle:])
        assert isinstance(result, ClientHello)

    def first_byte() -> None:
        hello[0] == 0x16  # noqa: B015 - the comparison is the measurement

    def start_handshake() -> None:
        ssl_client_hello(context)

    first_byte_rate = rate(first_byte, 1)
    handshake_rate = rate(start_handshake, 1)
    one_shot_rate = rate(one_shot, 1)
    two_reads_rate = rate(two_reads, 1)
    return [
        Row(
            f"ClientHello parse ({len(hello)} B)",
            one_shot_rate,
            "data[0] == 0x16",
            first_byte_rate,
            "ops/s",
        ),
        Row(
            f"ClientHello parse ({len(hello)} B)",
            one_shot_rate,
            "ssl: start a handshake",
            handshake_rate,
            "ops/s",
        ),
        Row(
            "ClientHello parse, 2 reads",
            two_reads_rate,
            "ssl: start a handshake",
            handshake_rate,
            "ops/s",
        ),
    ]


def main() -> int:
    print(f"wanfed_proto wire benchmarks (python {sys.version.split()[0]}, {ssl.OPENSSL_VERSION})")
    started = time.perf_counter()
    rows = frame_rows() + hello_rows()
    name_width = max(len(row.name) for row in rows)
    base_width = max(len(row.baseline_name) for row in rows)
    print_table(
        [
            Column("benchmark", name_width, align="<"),
            Column("ours", 15, ",.0f"),
            Column("baseline", base_width, align="<"),
            Column("baseline", 15, ",.0f"),
            Column("ours/base", 9, ".3f"),
        ],
        [
            [
                row.name,
                f"{row.ours:>9,.0f} {row.unit:<5}",
                row.baseline_name,
                f"{row.baseline:>9,.0f} {row.unit:<5}",
                row.ratio,
            ]
            for row in rows
        ],
        sep="  ",
        rule=False,
    )
    print(f"({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
