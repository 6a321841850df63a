"""One Raft server for the multi-process tests, driven over a line protocol.

Run as ``python raft_node.py --address 127.0.0.1:P --peers A,B --data-dir D
--encrypt-key HEX [--pki DIR]``; with ``--pki`` raft rides mutual TLS on the
given address (a wanfed RPC port) instead of pysyncobj's own port. It prints
``READY <control port>`` once it listens on 127.0.0.1. Each request is one
line, each answer one line:

* ``WRITE <id>``: upsert federation state ``w<id>`` through the leader;
  ``OK <index>``, ``NOTLEADER <leader>``, ``UNKNOWN <why>`` or ``ERR <why>``.
* ``WRITEMANY <start> <count> <concurrency>``: the same for many ids at once;
  ``OK <acknowledged> <failed>``.
* ``STATUS``: ``STATUS <is leader 0/1> <leader or -> <applied index>
  <records> <journal entries>``.
* ``IDS``: ``IDS <comma-separated ids of stored records>``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from wanfed_fsm import (
    FederationState,
    FederationStateRequest,
    FederationStateWrite,
    NotLeaderError,
    OutcomeUnknownError,
    RaftConfig,
    RaftConsensus,
    RaftLink,
    ReadTxn,
)
from wanfed_proto import (
    Alpn,
    Connection,
    client_context,
    dial_alpn,
    serve_rpc_port,
    server_context,
)


def _write(record_id: int) -> FederationStateWrite:
    return FederationStateWrite(
        request=FederationStateRequest(
            op="upsert", state=FederationState(datacenter=f"w{record_id}")
        )
    )


async def _write_one(consensus: RaftConsensus, record_id: int) -> str:
    try:
        index = await consensus.apply(_write(record_id))
    except NotLeaderError as exc:
        return f"NOTLEADER {exc.leader or '-'}"
    except OutcomeUnknownError as exc:
        return f"UNKNOWN {exc.reason}"
    except Exception as exc:
        return f"ERR {type(exc).__name__}: {exc}"
    return f"OK {index}"


async def _write_many(consensus: RaftConsensus, start: int, count: int, concurrency: int) -> str:
    acknowledged = failed = 0
    ids = iter(range(start, start + count))

    async def worker() -> None:
        nonlocal acknowledged, failed
        for record_id in ids:
            if (await _write_one(consensus, record_id)).startswith("OK"):
                acknowledged += 1
            else:
                failed += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return f"OK {acknowledged} {failed}"


def _ids(txn: ReadTxn) -> tuple[int, list[str]]:
    index, states = txn.federation_states()
    return index, [s.datacenter[1:] for s in states]


async def _handle(
    consensus: RaftConsensus, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        while line := await reader.readline():
            verb, *args = line.decode().split()
            if verb == "WRITE":
                answer = await _write_one(consensus, int(args[0]))
            elif verb == "WRITEMANY":
                answer = await _write_many(consensus, *(int(a) for a in args))
            elif verb == "STATUS":
                with consensus.store.read() as txn:
                    _, records = txn.federation_states()
                answer = (
                    f"STATUS {int(consensus.is_leader())} {consensus.leader_address() or '-'} "
                    f"{consensus.raft_index()} {len(records)} {consensus.log_size()}"
                )
            elif verb == "IDS":
                with consensus.store.read() as txn:
                    _, ids = _ids(txn)
                answer = "IDS " + ",".join(ids)
            else:
                answer = f"ERR unknown verb {verb}"
            writer.write(answer.encode() + b"\n")
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def _serve_raft_port(address: str, pki: Path) -> RaftLink:
    """With ``--pki``: raft over this server's RPC port (mutual TLS, ALPN wanfed/raft)."""
    ca, cert, key = pki / "ca.pem", pki / "server.pem", pki / "server-key.pem"
    dial_context = client_context(ca, cert, key, alpn=[Alpn.RAFT])

    async def dial(peer: str) -> Connection:
        return await dial_alpn(peer, "server.dc1.consul", Alpn.RAFT, dial_context, timeout=2)

    link = RaftLink(dial)
    host, port = address.rsplit(":", 1)
    await serve_rpc_port(
        host,
        int(port),
        plain_handlers={},
        alpn_handlers={Alpn.RAFT: link.serve},
        ssl_context=server_context(ca, cert, key),
    )
    return link


async def _main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--peers", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--encrypt-key", required=True)
    parser.add_argument("--compaction-min-entries", type=int, default=5000)
    parser.add_argument("--compaction-min-time", type=float, default=300.0)
    parser.add_argument("--pki", help="directory with ca.pem, server.pem, server-key.pem")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    link = await _serve_raft_port(args.address, Path(args.pki)) if args.pki else None
    consensus = RaftConsensus(
        RaftConfig(
            address=args.address,
            peers=[p for p in args.peers.split(",") if p],
            data_dir=args.data_dir,
            encrypt_key=None if link else bytes.fromhex(args.encrypt_key),
            compaction_min_entries=args.compaction_min_entries,
            compaction_min_time=args.compaction_min_time,
        ),
        link=link,
    )
    server = await asyncio.start_server(
        lambda r, w: _handle(consensus, r, w), host="127.0.0.1", port=0
    )
    port = server.sockets[0].getsockname()[1]
    print(f"READY {port}", flush=True)
    # runs until the test kills the process (SIGKILL is the point) or closes stdin
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    server.close()
    await consensus.shutdown()


if __name__ == "__main__":
    asyncio.run(_main())
