"""A mixed pool of hashicorp/memberlist (Go) and wanfed (Python) members on loopback.

The Go peer is built offline from Debian's memberlist sources by
``tools/interop/memberlist/build.sh``; ``nox -s interop`` installs those
packages. Both kinds run as real processes with the fast profile, so that
"kill -9" means the same thing for either.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from wanfed_agent.gossip import (
    Ack,
    Alive,
    IndirectPing,
    NodeStateKind,
    Ping,
    PushNodeState,
    PushPull,
    Suspect,
    decode_tags,
    encode_message,
    encode_push_pull,
    encode_tags,
    suspicion_timeout,
)
from wanfed_agent.gossip._lzw import lzw_decompress

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[3]
BUILD_SCRIPT = ROOT / "tools" / "interop" / "memberlist" / "build.sh"

# The fast profile, spelled for both implementations.
PROBE_INTERVAL = 0.2
PROBE_TIMEOUT = 0.1
SUSPICION_MULT = 4
SUSPICION_MAX_MULT = 6
GO_TIMING = [
    "-probe-interval=200ms",
    "-probe-timeout=100ms",
    f"-suspicion-mult={SUSPICION_MULT}",
    "-gossip-interval=50ms",
    "-gossip-nodes=3",
    "-push-pull-interval=5s",
    "-gossip-to-the-dead=5s",
]

# A Python member as its own process: JSON lines out, commands in, like the Go peer.
PY_MEMBER = r"""
import asyncio, json, sys, time
from wanfed_agent.gossip import GossipAgent, PlainTransport, fast_profile, encode_tags

def emit(**fields):
    fields["t"] = time.time()
    print(json.dumps(fields), flush=True)

async def main(name, join, tags, encrypt):
    tag_map = dict(kv.split("=", 1) for kv in tags.split(",") if kv)
    config = fast_profile(name, "127.0.0.1", 0, meta=encode_tags(tag_map), encrypt=encrypt or None)
    agent = GossipAgent(config, PlainTransport("127.0.0.1", 0))
    await agent.start()
    emit(event="ready", name=name, port=agent.address[1])
    seen = 0

    async def report():
        nonlocal seen
        while True:
            for ev in agent.events[seen:]:
                emit(event=ev.kind.value, name=ev.member.name, tags=ev.member.tags)
            seen = len(agent.events)
            await asyncio.sleep(0.01)

    reporter = asyncio.ensure_future(report())
    if join:
        emit(event="joined", count=await agent.join(*join.split(",")), error="")
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        cmd = line.split()
        if cmd and cmd[0] == "leave":
            done = await agent.leave(5.0)
            emit(event="left", error="" if done else "timeout")
        elif cmd and cmd[0] == "join":
            emit(event="joined", count=await agent.join(*cmd[1].split(",")), error="")
        elif cmd and cmd[0] == "members":
            emit(event="members", members=[
                {"name": m.name, "state": m.state.value, "tags": m.tags} for m in agent.members()
            ])
    reporter.cancel()
    await agent.close()

asyncio.run(main(*sys.argv[1:5]))
"""


class Peer:
    """One member process and the JSON lines it has printed so far."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, kind: str) -> None:
        self.name = name
        self.kind = kind
        self.proc = proc
        self.lines: list[dict[str, Any]] = []
        self.port = 0
        self._changed = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.lines.append(json.loads(raw))
                self._changed.set()

    def mark(self) -> int:
        """A position in the output; waits can ignore what was printed before it."""
        return len(self.lines)

    async def wait_for(
        self, match: Callable[[dict[str, Any]], bool], within: float, after: int = 0
    ) -> dict[str, Any]:
        async with asyncio.timeout(within):
            while True:
                for line in self.lines[after:]:
                    if match(line):
                        return line
                self._changed.clear()
                await self._changed.wait()

    async def wait_event(
        self, event: str, name: str, within: float, after: int = 0
    ) -> dict[str, Any]:
        try:
            return await self.wait_for(
                lambda line: line.get("event") == event and line.get("name") == name,
                within,
                after,
            )
        except TimeoutError:
            raise AssertionError(
                f"{self.kind} member {self.name} did not report {event} {name} within {within}s; "
                f"it printed {self.lines}"
            ) from None

    def has_event(self, event: str, name: str) -> bool:
        return any(line.get("event") == event and line.get("name") == name for line in self.lines)

    async def command(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        await self.proc.stdin.drain()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@pytest.fixture(scope="module")
def mlpeer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    binary = tmp_path_factory.mktemp("mlpeer") / "mlpeer"
    result = subprocess.run(
        ["sh", str(BUILD_SCRIPT), str(binary)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        pytest.fail(
            "could not build the Go memberlist interop peer "
            f"(exit {result.returncode}): {result.stderr.strip()}\n"
            "Run `nox -s interop`: it installs golang-go and "
            "golang-github-hashicorp-memberlist-dev with apt-get first.",
            pytrace=False,
        )
    return binary


class Pool:
    def __init__(self, mlpeer: Path, encrypt: str) -> None:
        self.mlpeer = mlpeer
        self.encrypt = encrypt
        self.peers: list[Peer] = []

    async def _ready(self, peer: Peer) -> Peer:
        self.peers.append(peer)
        ready = await peer.wait_for(lambda line: line.get("event") == "ready", 30.0)
        peer.port = int(ready["port"])
        return peer

    async def go(self, name: str, tags: str, join: str = "") -> Peer:
        args = [str(self.mlpeer), f"-name={name}", f"-tags={tags}", *GO_TIMING]
        if join:
            args.append(f"-join={join}")
        if self.encrypt:
            args.append(f"-encrypt={self.encrypt}")
        proc = await asyncio.create_subprocess_exec(
            *args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        return await self._ready(Peer(name, proc, "Go"))

    async def py(self, name: str, tags: str, join: str = "") -> Peer:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            PY_MEMBER,
            name,
            join,
            tags,
            self.encrypt,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        return await self._ready(Peer(name, proc, "Python"))

    async def close(self) -> None:
        for peer in self.peers:
            await peer.stop()


@contextlib.asynccontextmanager
async def pool(mlpeer: Path, encrypt: str = "") -> AsyncIterator[Pool]:
    p = Pool(mlpeer, encrypt)
    try:
        yield p
    finally:
        await p.close()


def failure_bound(members: int) -> float:
    """How long detecting a killed member may take: find it, then suspect it out."""
    minimum = suspicion_timeout(SUSPICION_MULT, members, PROBE_INTERVAL)
    return 10 * PROBE_INTERVAL + SUSPICION_MAX_MULT * minimum + 1.0


async def _assert_everyone_sees_everyone(peers: list[Peer]) -> None:
    for observer in peers:
        for subject in peers:
            if subject is not observer:
                line = await observer.wait_event("join", subject.name, 15.0)
                expected_role = "go" if subject.kind == "Go" else "py"
                assert line["tags"] == {"dc": "dc1", "role": expected_role}, (observer.name, line)


async def test_mixed_pool_joins_sees_metadata_detects_kills_and_leaves(mlpeer: Path) -> None:
    async with pool(mlpeer) as p:
        go1 = await p.go("go1.dc1", "dc=dc1,role=go")
        # Python joins Go ...
        py1 = await p.py("py1.dc1", "dc=dc1,role=py", join=f"go1.dc1/127.0.0.1:{go1.port}")
        assert (await py1.wait_for(lambda line: line.get("event") == "joined", 15.0))["count"] == 1
        # ... and Go joins Python.
        go2 = await p.go("go2.dc1", "dc=dc1,role=go", join=f"py1.dc1/127.0.0.1:{py1.port}")
        joined = await go2.wait_for(lambda line: line.get("event") == "joined", 15.0)
        assert joined["count"] == 1, joined
        py2 = await p.py("py2.dc1", "dc=dc1,role=py", join=f"go2.dc1/127.0.0.1:{go2.port}")
        peers = [go1, py1, go2, py2]
        await _assert_everyone_sees_everyone(peers)

        # kill -9 of a Go member: Python members report it failed, Go too.
        loop = asyncio.get_running_loop()
        marks = {peer.name: peer.mark() for peer in peers}
        go2.kill()
        killed_at = loop.time()
        bound = failure_bound(4)
        for observer in (py1, py2):
            await observer.wait_event("failed", "go2.dc1", bound, marks[observer.name])
        await go1.wait_event("leave", "go2.dc1", bound, marks["go1.dc1"])
        assert loop.time() - killed_at <= bound + 1.0

        # kill -9 of a Python member: the Go member reports it gone.
        marks = {peer.name: peer.mark() for peer in peers}
        py2.kill()
        await go1.wait_event("leave", "py2.dc1", bound, marks["go1.dc1"])
        await py1.wait_event("failed", "py2.dc1", bound, marks["py1.dc1"])

        # Graceful leave of a Python member that keeps running (and so keeps
        # answering pings): Go can only drop it by processing the leave.
        marks = {peer.name: peer.mark() for peer in peers}
        await py1.command("leave")
        left = await py1.wait_for(lambda line: line.get("event") == "left", 10.0)
        assert left["error"] == "", left
        await go1.wait_event("leave", "py1.dc1", 10.0, marks["go1.dc1"])
        assert py1.proc.returncode is None


async def test_python_sees_a_go_members_graceful_leave_as_left(mlpeer: Path) -> None:
    async with pool(mlpeer) as p:
        py1 = await p.py("py1.dc1", "dc=dc1,role=py")
        go1 = await p.go("go1.dc1", "dc=dc1,role=go", join=f"py1.dc1/127.0.0.1:{py1.port}")
        await _assert_everyone_sees_everyone([py1, go1])
        mark = py1.mark()
        await go1.command("leave")
        await py1.wait_event("leave", "go1.dc1", 10.0, mark)
        assert not py1.has_event("failed", "go1.dc1")


async def test_encrypted_mixed_pool_interoperates(mlpeer: Path) -> None:
    key = base64.b64encode(bytes(range(32))).decode()
    async with pool(mlpeer, encrypt=key) as p:
        go1 = await p.go("go1.dc1", "dc=dc1,role=go")
        py1 = await p.py("py1.dc1", "dc=dc1,role=py", join=f"go1.dc1/127.0.0.1:{go1.port}")
        go2 = await p.go("go2.dc1", "dc=dc1,role=go", join=f"py1.dc1/127.0.0.1:{py1.port}")
        await _assert_everyone_sees_everyone([go1, py1, go2])
        mark = py1.mark()
        go2.kill()
        await py1.wait_event("failed", "go2.dc1", failure_bound(3), mark)


def test_live_go_codec_matches_our_encodings(mlpeer: Path) -> None:
    out = subprocess.run([str(mlpeer), "-golden"], capture_output=True, text=True, check=True)
    golden = {name: bytes.fromhex(value) for name, value in json.loads(out.stdout).items()}
    lo = bytes((127, 0, 0, 1))
    vsn = bytes((1, 5, 2, 0, 0, 0))
    ours: dict[str, Ping | IndirectPing | Ack | Suspect | Alive] = {
        "ping": Ping(seq_no=7, node="go1.dc1"),
        "ping_full": Ping(
            seq_no=70000, node="go1.dc1", source_addr=lo, source_port=8302, source_node="py1.dc2"
        ),
        "indirect_ping": IndirectPing(
            seq_no=300,
            target=bytes((127, 0, 0, 2)),
            port=8302,
            node="go2.dc1",
            nack=True,
            source_addr=lo,
            source_port=8302,
            source_node="py1.dc1",
        ),
        "ack": Ack(seq_no=4294967295),
        "suspect": Suspect(incarnation=3, node="go1.dc1", from_="py1.dc1"),
        "alive": Alive(
            incarnation=128,
            node="n" * 40,
            addr=lo,
            port=65535,
            meta=encode_tags({"dc": "dc1", "role": "go"}),
            vsn=vsn,
        ),
    }
    for name, msg in ours.items():
        if name == "alive":
            continue
        assert encode_message(msg)[1:] == golden[name], name
    # Go iterates maps in random order, so its tag map may come out in either
    # key order; both are the same tags, and ours always sorts.
    alive = ours["alive"]
    assert isinstance(alive, Alive)
    other_order = b"\xff\x82" + b"\xa4role\xa2go" + b"\xa2dc\xa3dc1"
    assert decode_tags(other_order) == decode_tags(alive.meta)
    accepted = {
        encode_message(alive)[1:],
        encode_message(msgspec.structs.replace(alive, meta=other_order))[1:],
    }
    assert golden["alive"] in accepted
    state = PushNodeState(
        name="go1.dc1", addr=lo, port=7946, incarnation=1, state=NodeStateKind.LEFT, vsn=vsn
    )
    pushed = encode_push_pull(PushPull(join=True, states=(state, state)))
    assert pushed[1:] == golden["push_pull_header"] + 2 * golden["push_node_state"]
    plain = lzw_decompress(golden["lzw_compressed"], max_output=1 << 20)
    assert plain == golden["lzw_plain"]
