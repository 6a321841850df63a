"""``RaftConsensus``: the :class:`Consensus` interface on pysyncobj.

Theory of operation. pysyncobj runs Raft on its own "tick" thread. The
replicated object is a thin shell with exactly one ``@replicated`` method,
``apply_entry(data)``, which hands the encoded command bytes and the entry's
raft index to :class:`Fsm`. Every server therefore has the same replicated
method table whatever the FSM grows into, and the log carries msgpack, not
pickled objects (pysyncobj still pickles its own envelope on the wire; see
security below).

Threads. The FSM is applied on the tick thread; the asyncio loop reads the
store. The store's lock makes every read transaction see whole writes (see
``_store``). Results and leadership changes cross back to the loop with
``loop.call_soon_threadsafe``; nothing on the tick thread ever blocks on the
loop.

Writes are submitted on the leader only: on a follower ``apply`` raises
:class:`NotLeaderError` naming the leader, before anything is queued. A
submitted write that pysyncobj reports as ``LEADER_CHANGED``/``DISCARDED``/
``NOT_LEADER``, or that produces no result within ``apply_timeout``, raises
:class:`OutcomeUnknownError`: it may have been committed.

Durability. The journal (``raft.journal``) and the snapshot
(``raft.snapshot``, written by :func:`_write_snapshot_file` in our own format,
never pickle of our objects) live in ``data_dir``. pysyncobj's journal is an
mmap'd file that is not fsync'd: an acknowledged write survives ``kill -9``
of every server (the page cache outlives the process), not a power loss.

Security. pysyncobj's wire format is pickle, so raft traffic must never be
accepted from an unauthenticated peer. Today that is pysyncobj's ``password``
(Fernet, with a key pbkdf2-derived from the password), and the password is
derived from the cluster's ``encrypt`` key, or a :class:`RaftLink` that
carries raft over the server's mutual-TLS RPC port (ALPN ``wanfed/raft``)
in place of pysyncobj's TCP transport. Outside dev mode a server with
neither refuses to start.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import msgspec
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated
from pysyncobj.node import TCPNode
from pysyncobj.pipe_notifier import PipeNotifier

from ._consensus import LeadershipCallback
from ._errors import (
    CommandRejectedError,
    ConsensusError,
    NotLeaderError,
    NotReadyError,
    OutcomeUnknownError,
    RaftSecurityError,
    SnapshotFormatError,
)
from ._fsm import ApplyResult, Barrier, Command, Fsm, encode_command
from ._raft_link import RaftLink
from ._store import StateStore, decode_snapshot

__all__ = ["RaftConfig", "RaftConsensus", "raft_password"]

logger = logging.getLogger(__name__)

_LEADER: Final = 2  # pysyncobj's _RAFT_STATE.LEADER
_PASSWORD_LABEL: Final = b"wanfed raft password v1"
_SNAPSHOT_FILE_VERSION: Final = 1


class _DemoteReplayedTruncation(logging.Filter):
    """pysyncobj logs CRITICAL "truncating already-applied log entries" whenever a
    reordered append-entries message from the current leader makes a follower
    drop and re-add entries it already applied. The re-added entries come from
    the same leader and term, so by Raft's log-matching property they are the
    entries that were applied, and pysyncobj never re-applies them (its
    applied index does not move back). Under pipelined load this fires
    hundreds of times a second, so it is logged at DEBUG, not CRITICAL."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.CRITICAL and "already-applied" in str(record.msg):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


logging.getLogger("pysyncobj.syncobj").addFilter(_DemoteReplayedTruncation())


class RaftConfig(msgspec.Struct, frozen=True, kw_only=True):
    """One server's Raft settings. Timing defaults are the measured ones that give
    sub-millisecond commits on loopback and a writable new leader within ~0.5 s."""

    address: str
    """This server's raft address, ``host:port``."""
    peers: list[str] = msgspec.field(default_factory=list)
    """The other voting servers' raft addresses."""
    data_dir: str
    encrypt_key: bytes | None = None
    dev_mode: bool = False
    apply_timeout: float = 5.0
    election_timeout_min: float = 0.15
    election_timeout_max: float = 0.3
    heartbeat_interval: float = 0.03
    connection_timeout: float = 0.6
    connection_retry: float = 0.2
    leader_lease_timeout: float = 1.0
    compaction_min_entries: int = 5000
    compaction_min_time: float = 300.0

    def __post_init__(self) -> None:
        if ":" not in self.address:
            raise ValueError(f"raft address {self.address!r} is not host:port")
        if self.address in self.peers:
            raise ValueError(f"raft peers must not include this server ({self.address})")
        if not self.election_timeout_min > 3 * self.heartbeat_interval:
            raise ValueError("election_timeout_min must exceed three heartbeat intervals")
        if not self.election_timeout_max > self.election_timeout_min:
            raise ValueError("election_timeout_max must exceed election_timeout_min")

    def scaled(self, multiplier: float) -> RaftConfig:
        """These settings with every failure-detection time ``multiplier`` times longer.

        Consul's ``performance.raft_multiplier``: the defaults suit servers
        that answer within milliseconds; a server on a busy host, or whose
        event loop stalls (a large response, a garbage collection), must not
        lose its leadership for it, at the price of slower failover.
        """
        if multiplier < 1:
            raise ValueError(f"raft timing multiplier must be at least 1, got {multiplier}")
        return msgspec.structs.replace(
            self,
            election_timeout_min=self.election_timeout_min * multiplier,
            election_timeout_max=self.election_timeout_max * multiplier,
            heartbeat_interval=self.heartbeat_interval * multiplier,
            leader_lease_timeout=self.leader_lease_timeout * multiplier,
        )


def raft_password(encrypt_key: bytes) -> str:
    """Derive pysyncobj's password from the ``encrypt`` key.

    A keyed HMAC with a fixed label, so the raft password is useless for
    gossip decryption and vice versa, and every server derives the same one.
    """
    if len(encrypt_key) < 16:
        raise RaftSecurityError("the encrypt key is too short to protect raft traffic")
    return hmac.new(encrypt_key, _PASSWORD_LABEL, hashlib.sha256).hexdigest()


class _SnapshotFile(msgspec.Struct, frozen=True, kw_only=True):
    """What pysyncobj needs back from a dump, plus our versioned store snapshot."""

    version: int
    store: bytes
    last_entry: tuple[bytes, int, int]
    previous_entry: tuple[bytes, int, int]
    cluster: list[str]


_snapshot_file_decoder = msgspec.msgpack.Decoder(_SnapshotFile)


def _entry(raw: Any) -> tuple[bytes, int, int]:
    command, index, term = raw
    return bytes(command), int(index), int(term)


class _RaftShell(SyncObj):  # type: ignore[misc]
    """The replicated object: one method, so every server's method table is identical."""

    def __init__(
        self,
        fsm: Fsm,
        config: RaftConfig,
        conf: SyncObjConf,
        transport_class: Callable[..., Any] | None,
    ) -> None:
        self._wanfed_fsm = fsm
        kwargs: dict[str, Any] = {}
        if transport_class is not None:
            kwargs["transportClass"] = transport_class
        super().__init__(config.address, list(config.peers), conf, **kwargs)

    @replicated  # type: ignore[untyped-decorator]
    def apply_entry(self, data: bytes) -> ApplyResult:
        # pysyncobj advances raftLastApplied after this returns, so +1 is this entry.
        return self._wanfed_fsm.apply(self.raftLastApplied + 1, data)


class RaftConsensus:
    """A voting server of a pysyncobj Raft cluster. Construct inside a running loop."""

    def __init__(
        self,
        config: RaftConfig,
        *,
        fsm: Fsm | None = None,
        link: RaftLink | None = None,
    ) -> None:
        """With ``link``, raft travels over the server's own mutually authenticated
        connections (ALPN ``wanfed/raft`` on the RPC port) instead of pysyncobj's
        TCP port; ``config.address`` and ``peers`` are then RPC addresses, and
        the encrypt key is not needed for raft."""
        if config.encrypt_key is None and link is None and not config.dev_mode:
            raise RaftSecurityError(
                "refusing to start: raft traffic between servers would be unauthenticated "
                "(pysyncobj speaks pickle). Configure TLS (ca_file, cert_file, key_file) so raft "
                "rides the mutual-TLS RPC port, or set the `encrypt` key (the same on every "
                "server) to authenticate and encrypt raft, or run a single server with -dev"
            )
        self._loop = asyncio.get_running_loop()
        self._fsm = fsm if fsm is not None else Fsm()
        self._config = config
        self._listeners: list[LeadershipCallback] = []
        # leadership as last announced on the loop; listeners see each change once, in order
        self._announced_leader = False
        self._closed = False
        data_dir = Path(config.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        self._snapshot_path = str(data_dir / "raft.snapshot")
        if os.path.exists(self._snapshot_path):
            _load_snapshot_file(self._snapshot_path)  # refuse to start on one we cannot read
        conf = SyncObjConf(
            password=(
                raft_password(config.encrypt_key) if config.encrypt_key and link is None else None
            ),
            appendEntriesUseBatch=False,
            useFork=False,
            commandsWaitLeader=False,
            dynamicMembershipChange=True,
            raftMinTimeout=config.election_timeout_min,
            raftMaxTimeout=config.election_timeout_max,
            appendEntriesPeriod=config.heartbeat_interval,
            connectionTimeout=max(config.connection_timeout, config.election_timeout_max),
            connectionRetryTime=config.connection_retry,
            leaderFallbackTimeout=config.leader_lease_timeout,
            journalFile=str(data_dir / "raft.journal"),
            fullDumpFile=self._snapshot_path,
            serializer=self._write_snapshot_file,
            deserializer=self._read_snapshot_file,
            logCompactionMinEntries=config.compaction_min_entries,
            logCompactionMinTime=config.compaction_min_time,
            onStateChanged=self._on_state_changed,
        )
        self._pending = 0  # writes submitted and not yet answered by pysyncobj
        self._pending_lock = threading.Lock()
        self._kicker: PipeNotifier | None = None
        self._shell = _RaftShell(
            self._fsm, config, conf, link.transport_factory(self._loop) if link else None
        )
        if not config.peers:
            self._shell.addOnTickCallback(self._kick_single_server)
        if link is not None:
            transport = "wanfed/raft link"
        else:
            transport = "tcp+password" if config.encrypt_key else "tcp, unauthenticated (dev)"
        logger.info(
            "raft started address=%s peers=%s data_dir=%s transport=%s election_timeout=%g-%gs; "
            "waiting for a leader",
            config.address,
            ",".join(config.peers),
            config.data_dir,
            transport,
            config.election_timeout_min,
            config.election_timeout_max,
        )

    # --- Consensus -------------------------------------------------------------

    @property
    def store(self) -> StateStore:
        return self._fsm.store

    @property
    def fsm(self) -> Fsm:
        return self._fsm

    def is_leader(self) -> bool:
        return not self._closed and bool(self._shell._isLeader())

    def leader_address(self) -> str | None:
        if self._closed:
            return None
        leader = self._shell._getLeader()
        return None if leader is None else str(leader.id)

    async def apply(self, command: Command) -> int:
        return await self._submit(encode_command(command))

    async def verify_leader(self) -> None:
        """Commit a barrier: proves a quorum still follows us and that our FSM has
        applied everything committed before this call."""
        try:
            await self._submit(encode_command(Barrier()))
        except ConsensusError as exc:
            raise NotReadyError() from exc

    def on_leadership_change(self, callback: LeadershipCallback) -> Callable[[], None]:
        self._listeners.append(callback)
        self._loop.call_soon(self._deliver_current, callback)

        def unsubscribe() -> None:
            if callback in self._listeners:
                self._listeners.remove(callback)

        return unsubscribe

    async def add_server(self, address: str) -> None:
        await self._membership(self._shell.addNodeToCluster, address, "add")

    async def remove_server(self, address: str) -> None:
        await self._membership(self._shell.removeNodeFromCluster, address, "remove")

    async def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._listeners.clear()
        await asyncio.to_thread(self._shell.destroy_synchronous)
        logger.info("raft stopped address=%s", self._config.address)

    # --- internals -------------------------------------------------------------

    def raft_index(self) -> int:
        """The last applied raft index (for status output and tests)."""
        return int(self._shell.raftLastApplied)

    def log_size(self) -> int:
        """Entries currently in the journal; compaction keeps this small."""
        return int(self._shell._getRaftLogSize())

    async def _submit(self, data: bytes) -> int:
        if self._closed:
            raise ConsensusError("consensus is shut down")
        if not self._shell._isLeader():
            raise NotLeaderError(self.leader_address())
        future: asyncio.Future[ApplyResult] = self._loop.create_future()

        def on_result(result: ApplyResult | None, error: int) -> None:
            with self._pending_lock:
                self._pending -= 1
            # the loop may be closed while the tick thread finishes the entry
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(_resolve_apply, future, result, error)

        with self._pending_lock:
            self._pending += 1
        self._shell.apply_entry(data, callback=on_result)
        # a bare timer instead of asyncio.wait_for: this is the hot path of every write
        timer = self._loop.call_later(self._config.apply_timeout, _expire, future, self._config)
        try:
            result = await future
        finally:
            timer.cancel()
        if result.error:
            raise CommandRejectedError(result.error)
        return result.index

    async def _membership(self, method: Callable[..., None], address: str, verb: str) -> None:
        # pysyncobj denies a membership change until the new leader's no-op entry is
        # applied; a committed barrier guarantees that (and that we still lead)
        await self._submit(encode_command(Barrier()))
        future: asyncio.Future[int] = self._loop.create_future()

        def on_result(_result: object, error: int) -> None:
            self._loop.call_soon_threadsafe(_resolve_error, future, error)

        method(address, callback=on_result)
        error = await asyncio.wait_for(future, self._config.apply_timeout)
        if error != FAIL_REASON.SUCCESS:
            raise ConsensusError(f"could not {verb} raft server {address}: {_reason(error)}")
        logger.info("raft membership changed op=%s server=%s", verb, address)

    def _kick_single_server(self) -> None:
        """Tick thread, alone in its cluster: nobody's reply will wake the poller
        after an entry is appended, so commits would wait for the next idle tick
        (50 ms). While writes are pending, wake it ourselves."""
        if self._kicker is None:
            self._kicker = PipeNotifier(self._shell._poller)
        if self._pending:
            with contextlib.suppress(OSError):
                self._kicker.notify()

    def _on_state_changed(self, old: int, new: int) -> None:
        """Tick thread: hop to the loop; only leader/not-leader transitions matter."""
        if (old == _LEADER) == (new == _LEADER):
            return
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._deliver, new == _LEADER)

    def _deliver(self, leader: bool) -> None:
        if leader == self._announced_leader or self._closed:
            return
        self._announced_leader = leader
        logger.info(
            "raft leadership changed address=%s leader=%s; notifying %d listeners",
            self._config.address,
            leader,
            len(self._listeners),
        )
        for callback in list(self._listeners):
            callback(leader)

    def _deliver_current(self, callback: LeadershipCallback) -> None:
        if callback in self._listeners:
            callback(self._announced_leader)

    def _write_snapshot_file(self, path: str, data: tuple[Any, Any, Any]) -> None:
        """pysyncobj serializer (tick thread): our snapshot plus raft's bookkeeping."""
        last, previous, cluster = data
        body = msgspec.msgpack.encode(
            _SnapshotFile(
                version=_SNAPSHOT_FILE_VERSION,
                store=self._fsm.snapshot(),
                last_entry=_entry(last),
                previous_entry=_entry(previous),
                cluster=sorted(str(node.id) for node in cluster),
            )
        )
        with open(path, "wb") as file:
            file.write(body)
            file.flush()
            os.fsync(file.fileno())
        logger.debug("raft snapshot written index=%d bytes=%d", _entry(last)[1], len(body))

    def _read_snapshot_file(self, path: str) -> tuple[Any, Any, Any]:
        """pysyncobj deserializer (tick thread): restore the store, hand back raft's part."""
        try:
            snapshot = _load_snapshot_file(path)
            self._fsm.restore(snapshot.store)
        except SnapshotFormatError:
            # pysyncobj would log and carry on with whatever state it had: say loudly
            # that this replica is now wrong, so an operator restarts it (startup
            # validation then refuses to run on the bad file).
            logger.critical(
                "raft snapshot could not be restored path=%s; this server's state is "
                "unreliable until it is restarted with a readable snapshot",
                path,
                exc_info=True,
            )
            raise
        logger.info(
            "raft snapshot restored index=%d; blocking queries re-run",
            snapshot.last_entry[1],
        )
        return (
            snapshot.last_entry,
            snapshot.previous_entry,
            {TCPNode(node) for node in snapshot.cluster},
        )


def _load_snapshot_file(path: str) -> _SnapshotFile:
    """Read and fully validate a snapshot file, including the store snapshot inside."""
    with open(path, "rb") as file:
        raw = file.read()
    try:
        snapshot = _snapshot_file_decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise SnapshotFormatError(f"raft snapshot file {path} is unreadable: {exc}") from exc
    except RecursionError:
        raise SnapshotFormatError(
            f"raft snapshot file {path} is unreadable: nested too deeply"
        ) from None
    if snapshot.version != _SNAPSHOT_FILE_VERSION:
        raise SnapshotFormatError(
            f"raft snapshot file {path} has format version {snapshot.version}; this build "
            f"reads version {_SNAPSHOT_FILE_VERSION}. Start a matching wanfed release, or move "
            "the data_dir away to rejoin the cluster as an empty server"
        )
    try:
        decode_snapshot(snapshot.store)
    except SnapshotFormatError as exc:
        raise SnapshotFormatError(f"raft snapshot file {path}: {exc}") from exc
    return snapshot


def _reason(error: int) -> str:
    names: dict[int, str] = {
        value: name for name, value in vars(FAIL_REASON).items() if not name.startswith("_")
    }
    return names.get(error, str(error))


def _resolve_apply(future: asyncio.Future[ApplyResult], result: Any, error: int) -> None:
    if future.done():
        return
    if error == FAIL_REASON.SUCCESS and isinstance(result, ApplyResult):
        future.set_result(result)
    elif error in (FAIL_REASON.MISSING_LEADER, FAIL_REASON.QUEUE_FULL):
        future.set_exception(ConsensusError(f"raft write not accepted: {_reason(error)}"))
    else:
        future.set_exception(OutcomeUnknownError(f"raft reported {_reason(error)}"))


def _expire(future: asyncio.Future[ApplyResult], config: RaftConfig) -> None:
    if not future.done():
        future.set_exception(OutcomeUnknownError(f"no result within {config.apply_timeout}s"))


def _resolve_error(future: asyncio.Future[int], error: int) -> None:
    if not future.done():
        future.set_result(error)
