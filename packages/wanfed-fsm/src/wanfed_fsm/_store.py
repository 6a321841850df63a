"""The state store: catalog and federation-state tables with indexes and watches.

Theory of operation. The tables (nodes, services, checks, federation
states, and the ACL tables of :mod:`wanfed_fsm._acl_store`: tokens and
policies) hold frozen records. Every table keeps its own modify index: the raft
index of the last write that changed it. A read returns ``(index, result)``
where the index is the highest modify index among the tables the read
touched, so a blocking query can tell "something I read may have changed"
from "nothing I read changed".

Writers (the FSM, on the Raft thread) and readers (the asyncio loop) share
one re-entrant lock. A read transaction holds it for the whole query
function, so a query that looks at several tables never sees half of a
write: the store is consistent at transaction granularity, and query
functions are pure in-memory code that finishes in microseconds. Records are
immutable, so results can leave the lock without copying.

Watches replace memdb's channels: a read transaction can register a
one-shot :class:`Watch` over exactly the tables it read. The registration
happens under the same lock as the read, so no write can slip between the
read and the watch. A write fires the watches of the tables it changed; a
snapshot restore fires every watch with ``abandoned=True``. Callbacks run on
the writer's thread after the lock is released, so they must only hand off
(``loop.call_soon_threadsafe``), never block.

Health answers (service instances joined with their node and checks) are the
hot read: every watcher of a service re-reads the same answer after each
write. The store keeps each answer it built until the next catalog write
(any change to nodes, services or checks, or a restore) and hands out fresh
lists of the same immutable entries.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Final

import msgspec

from ._acl_store import ACLChange, ACLTables, acl_inconsistency
from ._acl_structs import ACLPolicy, ACLToken
from ._errors import CatalogError, MissingDatacenterError, SnapshotFormatError
from ._structs import (
    CheckServiceNode,
    FederationState,
    HealthCheck,
    HealthStatus,
    Node,
    RegisterRequest,
    Service,
    ServiceKind,
    ServiceNode,
)

__all__ = [
    "SNAPSHOT_VERSION",
    "ReadTxn",
    "StateStore",
    "StoreContents",
    "Table",
    "Watch",
    "WatchCallback",
    "decode_snapshot",
]


class Table(enum.StrEnum):
    NODES = "nodes"
    SERVICES = "services"
    CHECKS = "checks"
    FEDERATION_STATES = "federation-states"
    ACL_TOKENS = "acl-tokens"
    ACL_POLICIES = "acl-policies"


WatchCallback = Callable[[bool], None]
"""Called once with ``abandoned``: True when a snapshot restore replaced the store."""


class Watch:
    """Interest in some tables; fires once, then is gone. ``cancel`` is idempotent."""

    __slots__ = ("_callback", "_store", "fired", "tables")

    def __init__(self, store: StateStore, tables: frozenset[Table], callback: WatchCallback):
        self._store = store
        self._callback = callback
        self.tables = tables
        self.fired = False

    def cancel(self) -> None:
        self._store._forget(self)


class StoreContents(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a store holds, in a canonical order; what a snapshot carries.

    Two stores are equal exactly when their contents are equal, which is what
    the determinism tests compare.
    """

    indexes: dict[str, int]
    nodes: list[Node]
    services: list[tuple[str, Service]]
    checks: list[HealthCheck]
    federation_states: list[FederationState]
    acl_tokens: list[ACLToken] = msgspec.field(default_factory=list)
    acl_policies: list[ACLPolicy] = msgspec.field(default_factory=list)
    acl_bootstrap_index: int = 0
    """Raft index of the last ACL bootstrap; 0 while bootstrap is allowed."""


SNAPSHOT_VERSION: Final = 1
_SNAPSHOT_MAGIC: Final = b"WFSM"
_HEADER_SIZE: Final = len(_SNAPSHOT_MAGIC) + 2
_snapshot_encoder = msgspec.msgpack.Encoder()
_snapshot_v1_decoder = msgspec.msgpack.Decoder(StoreContents)


_CATALOG_TABLES: Final = frozenset({Table.NODES, Table.SERVICES, Table.CHECKS})
_MAX_HEALTH_ANSWERS: Final = 1024
"""Distinct health answers kept between writes; beyond that the store starts over."""

_HealthQuery = tuple[str, str, bool]
"""("name" | "kind", the name or kind, passing only)"""


def _key(name: str) -> str:
    """Node names and datacenters are case-insensitive keys, as in Consul."""
    return name.lower()


def _same(a: Node | Service | HealthCheck, b: Node | Service | HealthCheck) -> bool:
    """Content equality with the raft indexes of ``b`` borrowed into ``a``."""
    return msgspec.structs.replace(a, create_index=b.create_index, modify_index=b.modify_index) == b


class StateStore:
    """The tables, their indexes and the watches over them. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._nodes: dict[str, Node] = {}
        self._services: dict[str, dict[str, Service]] = {}
        self._checks: dict[str, dict[str, HealthCheck]] = {}
        self._federation_states: dict[str, FederationState] = {}
        self._acl = ACLTables()
        self._indexes: dict[Table, int] = dict.fromkeys(Table, 0)
        self._watches: dict[Table, set[Watch]] = {table: set() for table in Table}
        self._all_watches: set[Watch] = set()
        self._health_answers: dict[_HealthQuery, list[CheckServiceNode]] = {}
        """Built health answers, valid until the next catalog write."""

    # --- reads ---------------------------------------------------------------

    @contextmanager
    def read(self) -> Iterator[ReadTxn]:
        """A consistent view for the duration of the ``with`` block; keep it short."""
        with self._lock:
            yield ReadTxn(self)

    def index(self, table: Table) -> int:
        with self._lock:
            return self._indexes[table]

    def contents(self) -> StoreContents:
        with self._lock:
            return StoreContents(
                indexes={table.value: index for table, index in self._indexes.items()},
                nodes=[self._nodes[k] for k in sorted(self._nodes)],
                services=[
                    (self._nodes[node].node, services[sid])
                    for node, services in sorted(self._services.items())
                    for sid in sorted(services)
                ],
                checks=[
                    checks[cid]
                    for _, checks in sorted(self._checks.items())
                    for cid in sorted(checks)
                ],
                federation_states=[
                    self._federation_states[k] for k in sorted(self._federation_states)
                ],
                acl_tokens=[self._acl.tokens[k] for k in sorted(self._acl.tokens)],
                acl_policies=[self._acl.policies[k] for k in sorted(self._acl.policies)],
                acl_bootstrap_index=self._acl.bootstrap_index,
            )

    # --- catalog writes --------------------------------------------------------

    def ensure_registration(self, index: int, request: RegisterRequest) -> None:
        """Register a node, optionally one service and checks, all or nothing.

        Records whose content did not change keep their indexes and do not
        move their table's index, so re-registering an unchanged gateway
        wakes nobody.
        """
        node = request.node
        key = _key(node.node)
        with self._lock:
            existing_node = self._nodes.get(key)
            services = self._services.get(key, {})
            if request.service is not None:
                services = {**services, request.service.service_id: request.service}
            for check in request.checks:
                if _key(check.node) != key:
                    raise CatalogError(
                        f"check {check.check_id!r} names node {check.node!r}, "
                        f"but the registration is for node {node.node!r}"
                    )
                if check.service_id and check.service_id not in services:
                    raise CatalogError(
                        f"Missing service registration for check {check.check_id!r}: "
                        f"no service {check.service_id!r} on node {node.node!r}"
                    )
            if existing_node is None and request.skip_node_update:
                raise CatalogError(f"cannot skip the node update: node {node.node!r} is unknown")
            changed: set[Table] = set()
            if not request.skip_node_update:
                self._put_node(index, node, changed)
            if request.service is not None:
                self._put_service(index, key, request.service, changed)
            for check in request.checks:
                if check.service_id:
                    check = msgspec.structs.replace(
                        check, service_name=services[check.service_id].service
                    )
                self._put_check(index, key, check, changed)
            fire = self._commit(index, changed)
        self._fire(fire, abandoned=False)

    def delete_node(self, index: int, node: str) -> None:
        """Remove a node with its services and checks; unknown nodes are a no-op."""
        key = _key(node)
        with self._lock:
            changed: set[Table] = set()
            if self._nodes.pop(key, None) is not None:
                changed.add(Table.NODES)
            if self._services.pop(key, None):
                changed.add(Table.SERVICES)
            if self._checks.pop(key, None):
                changed.add(Table.CHECKS)
            fire = self._commit(index, changed)
        self._fire(fire, abandoned=False)

    def delete_service(self, index: int, node: str, service_id: str) -> None:
        """Remove one service instance and the checks bound to it."""
        key = _key(node)
        with self._lock:
            changed: set[Table] = set()
            services = self._services.get(key, {})
            if services.pop(service_id, None) is not None:
                changed.add(Table.SERVICES)
                checks = self._checks.get(key, {})
                for check_id in [c.check_id for c in checks.values() if c.service_id == service_id]:
                    del checks[check_id]
                    changed.add(Table.CHECKS)
            fire = self._commit(index, changed)
        self._fire(fire, abandoned=False)

    def delete_check(self, index: int, node: str, check_id: str) -> None:
        key = _key(node)
        with self._lock:
            changed: set[Table] = set()
            if self._checks.get(key, {}).pop(check_id, None) is not None:
                changed.add(Table.CHECKS)
            fire = self._commit(index, changed)
        self._fire(fire, abandoned=False)

    def update_check_status(
        self, index: int, node: str, check_id: str, status: HealthStatus, output: str
    ) -> None:
        """Set a check's status and output (TTL updates, health-check results)."""
        key = _key(node)
        with self._lock:
            check = self._checks.get(key, {}).get(check_id)
            if check is None:
                raise CatalogError(f"check {check_id!r} is not registered on node {node!r}")
            changed: set[Table] = set()
            updated = msgspec.structs.replace(check, status=status, output=output)
            self._put_check(index, key, updated, changed)
            fire = self._commit(index, changed)
        self._fire(fire, abandoned=False)

    def _put_node(self, index: int, node: Node, changed: set[Table]) -> None:
        key = _key(node.node)
        existing = self._nodes.get(key)
        if existing is not None and _same(node, existing):
            return
        create = existing.create_index if existing is not None else index
        self._nodes[key] = msgspec.structs.replace(node, create_index=create, modify_index=index)
        changed.add(Table.NODES)

    def _put_service(self, index: int, key: str, service: Service, changed: set[Table]) -> None:
        services = self._services.setdefault(key, {})
        existing = services.get(service.service_id)
        if existing is not None and _same(service, existing):
            return
        create = existing.create_index if existing is not None else index
        services[service.service_id] = msgspec.structs.replace(
            service, create_index=create, modify_index=index
        )
        changed.add(Table.SERVICES)

    def _put_check(self, index: int, key: str, check: HealthCheck, changed: set[Table]) -> None:
        checks = self._checks.setdefault(key, {})
        existing = checks.get(check.check_id)
        if existing is not None and _same(check, existing):
            return
        create = existing.create_index if existing is not None else index
        checks[check.check_id] = msgspec.structs.replace(
            check, create_index=create, modify_index=index
        )
        changed.add(Table.CHECKS)

    # --- federation-state writes ---------------------------------------------

    def federation_state_set(self, index: int, state: FederationState) -> None:
        self.federation_state_batch_set(index, [state])

    def federation_state_batch_set(self, index: int, states: Iterable[FederationState]) -> None:
        """Upsert records in one transaction.

        A record keeps its CreateIndex across upserts. A zero
        PrimaryModifyIndex becomes this index: a write that did not come
        from replication is by definition a write in the primary.
        """
        states = list(states)
        if any(not state.datacenter for state in states):
            raise MissingDatacenterError()
        with self._lock:
            for state in states:
                key = _key(state.datacenter)
                existing = self._federation_states.get(key)
                self._federation_states[key] = msgspec.structs.replace(
                    state,
                    create_index=existing.create_index if existing is not None else index,
                    modify_index=index,
                    primary_modify_index=state.primary_modify_index or index,
                )
            fire = self._commit(index, {Table.FEDERATION_STATES} if states else set())
        self._fire(fire, abandoned=False)

    def federation_state_delete(self, index: int, datacenter: str) -> None:
        self.federation_state_batch_delete(index, [datacenter])

    def federation_state_batch_delete(self, index: int, datacenters: Iterable[str]) -> None:
        """Delete records in one transaction; absent datacenters are a no-op."""
        with self._lock:
            changed: set[Table] = set()
            for datacenter in datacenters:
                if self._federation_states.pop(_key(datacenter), None) is not None:
                    changed.add(Table.FEDERATION_STATES)
            fire = self._commit(index, changed)
        self._fire(fire, abandoned=False)

    # --- ACL writes ----------------------------------------------------------------
    # Each is one transaction: every record is checked before any is stored, and a
    # refused write (an ACLError) changes nothing and moves no index.

    def acl_token_set(
        self, index: int, tokens: Iterable[ACLToken], *, allow_missing_links: bool = False
    ) -> None:
        """Upsert tokens. ``allow_missing_links`` is for replication, whose tokens may
        name policies not replicated yet."""
        with self._lock:
            change = self._acl.set_tokens(index, tokens, allow_missing_links=allow_missing_links)
            fire = self._commit(index, _acl_tables(change))
        self._fire(fire, abandoned=False)

    def acl_token_delete(self, index: int, accessor_ids: Iterable[str]) -> None:
        """Delete tokens; unknown ones are a no-op, the anonymous token is refused."""
        with self._lock:
            fire = self._commit(index, _acl_tables(self._acl.delete_tokens(accessor_ids)))
        self._fire(fire, abandoned=False)

    def acl_policy_set(self, index: int, policies: Iterable[ACLPolicy]) -> None:
        """Upsert policies: names unique regardless of case, rules must parse."""
        with self._lock:
            fire = self._commit(index, _acl_tables(self._acl.set_policies(index, policies)))
        self._fire(fire, abandoned=False)

    def acl_policy_delete(self, index: int, policy_ids: Iterable[str]) -> None:
        """Delete policies; tokens keep their links, which reads then leave out."""
        with self._lock:
            fire = self._commit(index, _acl_tables(self._acl.delete_policies(policy_ids)))
        self._fire(fire, abandoned=False)

    def acl_initialize(self, index: int, create_time: datetime) -> None:
        """Create the global-management policy and the anonymous token if missing."""
        with self._lock:
            fire = self._commit(index, _acl_tables(self._acl.initialize(index, create_time)))
        self._fire(fire, abandoned=False)

    def acl_bootstrap(self, index: int, token: ACLToken, reset_index: int = 0) -> None:
        """Store the first management token; see :mod:`wanfed_fsm._acl_store` for the
        reset-index rule."""
        with self._lock:
            fire = self._commit(index, _acl_tables(self._acl.bootstrap(index, token, reset_index)))
        self._fire(fire, abandoned=False)

    # --- snapshots -------------------------------------------------------------

    def snapshot(self) -> bytes:
        """Versioned bytes: magic, format version (2 bytes), msgpack :class:`StoreContents`."""
        body = _snapshot_encoder.encode(self.contents())
        return _SNAPSHOT_MAGIC + SNAPSHOT_VERSION.to_bytes(2, "big") + body

    def restore(self, data: bytes) -> None:
        """Replace everything with a snapshot's contents and abandon every watch.

        A blocking query woken this way returns at once: its index may now
        be lower than the one it was blocking on, so it must not keep waiting.
        """
        contents = decode_snapshot(data)
        # Every table is built before any is replaced: a snapshot is restored whole or
        # (refused above) not at all, never in part.
        nodes = {_key(node.node): node for node in contents.nodes}
        services: dict[str, dict[str, Service]] = {}
        for node_name, service in contents.services:
            services.setdefault(_key(node_name), {})[service.service_id] = service
        checks: dict[str, dict[str, HealthCheck]] = {}
        for check in contents.checks:
            checks.setdefault(_key(check.node), {})[check.check_id] = check
        states = {_key(state.datacenter): state for state in contents.federation_states}
        indexes = {table: contents.indexes.get(table.value, 0) for table in Table}
        acl = ACLTables.build(
            contents.acl_tokens, contents.acl_policies, contents.acl_bootstrap_index
        )
        with self._lock:
            self._nodes = nodes
            self._services = services
            self._checks = checks
            self._federation_states = states
            self._acl = acl
            self._indexes = indexes
            self._health_answers.clear()
            fire = list(self._all_watches)
            for watch in fire:
                watch.fired = True
            self._all_watches.clear()
            for watches in self._watches.values():
                watches.clear()
        self._fire(fire, abandoned=True)

    # --- watches ---------------------------------------------------------------

    def _add_watch(self, tables: frozenset[Table], callback: WatchCallback) -> Watch:
        watch = Watch(self, tables, callback)
        with self._lock:
            for table in tables:
                self._watches[table].add(watch)
            self._all_watches.add(watch)
        return watch

    def _forget(self, watch: Watch) -> None:
        with self._lock:
            for table in watch.tables:
                self._watches[table].discard(watch)
            self._all_watches.discard(watch)

    def _commit(self, index: int, changed: set[Table]) -> list[Watch]:
        """Move the changed tables' indexes and detach the watches to fire (lock held)."""
        fire: list[Watch] = []
        if not changed.isdisjoint(_CATALOG_TABLES):
            self._health_answers.clear()
        for table in changed:
            self._indexes[table] = max(self._indexes[table], index)
            for watch in self._watches[table]:
                if not watch.fired:
                    watch.fired = True
                    fire.append(watch)
        for watch in fire:
            for table in watch.tables:
                self._watches[table].discard(watch)
            self._all_watches.discard(watch)
        return fire

    @staticmethod
    def _fire(watches: list[Watch], *, abandoned: bool) -> None:
        for watch in watches:
            watch._callback(abandoned)

    def watch_count(self, table: Table | None = None) -> int:
        """Registered, unfired watches (on ``table`` only, when given); a leak shows
        up here, and so does a blocking query that is parked, waiting for a write."""
        with self._lock:
            return len(self._all_watches if table is None else self._watches[table])


def _acl_tables(change: ACLChange) -> set[Table]:
    tokens, policies = change
    return {t for t, moved in ((Table.ACL_TOKENS, tokens), (Table.ACL_POLICIES, policies)) if moved}


def decode_snapshot(data: bytes) -> StoreContents:
    """Decode any snapshot format this build knows, or say clearly why not."""
    if len(data) < _HEADER_SIZE or not data.startswith(_SNAPSHOT_MAGIC):
        raise SnapshotFormatError("not a wanfed state snapshot (bad magic bytes)")
    version = int.from_bytes(data[len(_SNAPSHOT_MAGIC) : _HEADER_SIZE], "big")
    if version != SNAPSHOT_VERSION:
        raise SnapshotFormatError(
            f"snapshot format version {version} cannot be restored by this build, "
            f"which reads version {SNAPSHOT_VERSION}; restore it with a matching wanfed release"
        )
    try:
        contents = _snapshot_v1_decoder.decode(data[_HEADER_SIZE:])
    except msgspec.DecodeError as exc:
        raise SnapshotFormatError(f"corrupt snapshot (format version {version}): {exc}") from exc
    except RecursionError:
        # Unknown fields are skipped by descending into them: nesting is unbounded
        # even though every field is typed.
        raise SnapshotFormatError(
            f"corrupt snapshot (format version {version}): nested too deeply"
        ) from None
    problem = _inconsistency(contents)
    if problem:
        raise SnapshotFormatError(f"inconsistent snapshot (format version {version}): {problem}")
    return contents


def _inconsistency(contents: StoreContents) -> str:
    """What makes decoded contents impossible for a store to have held, or ``""``.

    A snapshot that decodes can still be garbage: a service of a node that is
    not there (the next snapshot would fail on it), two records under one key
    (one would silently vanish). The store's own writes never produce these,
    so a restore refuses them rather than serve a store no write could make.
    """
    tables = {table.value for table in Table}
    for table, index in contents.indexes.items():
        if table not in tables:
            return f"index of unknown table {table!r}"
        if not 0 <= index < 2**64:
            return f"index {index} of table {table!r} is out of range"
    nodes: set[str] = set()
    for node in contents.nodes:
        if _key(node.node) in nodes:
            return f"node {node.node!r} appears twice"
        nodes.add(_key(node.node))
    services: set[tuple[str, str]] = set()
    for node_name, service in contents.services:
        key = (_key(node_name), service.service_id)
        if key[0] not in nodes:
            return f"service {service.service_id!r} belongs to unknown node {node_name!r}"
        if key in services:
            return f"service {service.service_id!r} appears twice on node {node_name!r}"
        services.add(key)
    checks: set[tuple[str, str]] = set()
    for check in contents.checks:
        key = (_key(check.node), check.check_id)
        if key[0] not in nodes:
            return f"check {check.check_id!r} belongs to unknown node {check.node!r}"
        if key in checks:
            return f"check {check.check_id!r} appears twice on node {check.node!r}"
        if check.service_id and (key[0], check.service_id) not in services:
            return f"check {check.check_id!r} names unknown service {check.service_id!r}"
        checks.add(key)
    datacenters = [_key(state.datacenter) for state in contents.federation_states]
    if len(set(datacenters)) != len(datacenters):
        return "a datacenter has two federation states"
    return acl_inconsistency(
        contents.acl_tokens, contents.acl_policies, contents.acl_bootstrap_index
    )


class ReadTxn:
    """Queries over one consistent view. Each records the tables it read.

    Every query returns ``(index, result)``; the index is the highest modify
    index of the tables it read, which is what a blocking query compares.
    """

    def __init__(self, store: StateStore) -> None:
        self._store = store
        self.tables: set[Table] = set()

    def watch(self, callback: WatchCallback) -> Watch:
        """Fire ``callback`` when any table read so far changes, or on restore."""
        return self._store._add_watch(frozenset(self.tables), callback)

    def _index(self, *tables: Table) -> int:
        self.tables.update(tables)
        return max(self._store._indexes[table] for table in tables)

    # --- catalog ---------------------------------------------------------------

    def nodes(self) -> tuple[int, list[Node]]:
        store = self._store
        return self._index(Table.NODES), [store._nodes[k] for k in sorted(store._nodes)]

    def node(self, name: str) -> tuple[int, Node | None]:
        return self._index(Table.NODES), self._store._nodes.get(_key(name))

    def services(self) -> tuple[int, dict[str, list[str]]]:
        """Service name → sorted union of the tags of its instances."""
        tags: dict[str, set[str]] = {}
        for services in self._store._services.values():
            for service in services.values():
                tags.setdefault(service.service, set()).update(service.tags)
        return self._index(Table.SERVICES), {name: sorted(tags[name]) for name in sorted(tags)}

    def service_nodes(self, service_name: str) -> tuple[int, list[ServiceNode]]:
        index = self._index(Table.NODES, Table.SERVICES)
        return index, [
            ServiceNode(node=node, service=service)
            for node, service in self._instances(lambda s: s.service == service_name)
        ]

    def node_checks(self, node: str) -> tuple[int, list[HealthCheck]]:
        checks = self._store._checks.get(_key(node), {})
        return self._index(Table.CHECKS), [checks[cid] for cid in sorted(checks)]

    def check_service_nodes(
        self, service_name: str, *, passing_only: bool = False
    ) -> tuple[int, list[CheckServiceNode]]:
        """Instances of a service with node and checks (the health endpoint).

        Ordered by node (case-insensitively), then service ID; each entry's
        checks are the node's checks and the instance's own, by check ID.
        """
        return self._check_service_nodes(
            ("name", service_name, passing_only), lambda s: s.service == service_name
        )

    def check_service_nodes_by_kind(
        self, kind: ServiceKind, *, passing_only: bool = False
    ) -> tuple[int, list[CheckServiceNode]]:
        return self._check_service_nodes(("kind", kind, passing_only), lambda s: s.kind == kind)

    def service_dump(self, kind: ServiceKind) -> tuple[int, list[CheckServiceNode]]:
        """Every instance of a kind with its checks, healthy or not (anti-entropy's input)."""
        return self.check_service_nodes_by_kind(kind)

    def _instances(self, match: Callable[[Service], bool]) -> Iterator[tuple[Node, Service]]:
        store = self._store
        for node_key in sorted(store._services):
            services = store._services[node_key]
            for service_id in sorted(services):
                service = services[service_id]
                if match(service):
                    yield store._nodes[node_key], service

    def _check_service_nodes(
        self, query: _HealthQuery, match: Callable[[Service], bool]
    ) -> tuple[int, list[CheckServiceNode]]:
        index = self._index(Table.NODES, Table.SERVICES, Table.CHECKS)
        answers = self._store._health_answers
        answer = answers.get(query)
        if answer is None:
            answer = self._build_check_service_nodes(match, passing_only=query[2])
            if len(answers) >= _MAX_HEALTH_ANSWERS:
                answers.clear()
            answers[query] = answer
        return index, list(answer)

    def _build_check_service_nodes(
        self, match: Callable[[Service], bool], *, passing_only: bool
    ) -> list[CheckServiceNode]:
        store = self._store
        result: list[CheckServiceNode] = []
        for node_key in sorted(store._services):
            services = store._services[node_key]
            matching = [services[sid] for sid in sorted(services) if match(services[sid])]
            if not matching:
                continue
            node = store._nodes[node_key]
            checks = store._checks.get(node_key)
            ordered = [checks[cid] for cid in sorted(checks)] if checks else []
            for service in matching:
                service_id = service.service_id
                applicable = [c for c in ordered if not c.service_id or c.service_id == service_id]
                entry = CheckServiceNode(node=node, service=service, checks=applicable)
                if not passing_only or entry.passing():
                    result.append(entry)
        return result

    # --- federation states -------------------------------------------------------

    def federation_state(self, datacenter: str) -> tuple[int, FederationState | None]:
        index = self._index(Table.FEDERATION_STATES)
        return index, self._store._federation_states.get(_key(datacenter))

    def federation_states(self) -> tuple[int, list[FederationState]]:
        """All records ordered by datacenter."""
        states = self._store._federation_states
        return self._index(Table.FEDERATION_STATES), [states[k] for k in sorted(states)]

    def mesh_gateways_by_datacenter(self) -> tuple[int, dict[str, list[CheckServiceNode]]]:
        """``ListMeshGateways``: datacenter → its gateways, only DCs that have some.

        Lists are fresh, so a caller filtering them (ACLs) cannot change the store.
        """
        index, states = self.federation_states()
        return index, {s.datacenter: list(s.mesh_gateways) for s in states if s.mesh_gateways}

    # --- ACLs ----------------------------------------------------------------------
    # Token reads also depend on the policies table: the names in a token's links are
    # the policies' current names.

    def acl_token(self, accessor_id: str) -> tuple[int, ACLToken | None]:
        acl = self._store._acl
        token = acl.tokens.get(accessor_id)
        index = self._index(Table.ACL_TOKENS, Table.ACL_POLICIES)
        return index, None if token is None else acl.resolved(token)

    def acl_token_by_secret(self, secret: str) -> tuple[int, ACLToken | None]:
        """The token whose SecretID is ``secret`` (compared in constant time), or None."""
        acl = self._store._acl
        token = acl.token_by_secret(secret)
        index = self._index(Table.ACL_TOKENS, Table.ACL_POLICIES)
        return index, None if token is None else acl.resolved(token)

    def acl_tokens(self, policy_id: str = "") -> tuple[int, list[ACLToken]]:
        """Every token ordered by AccessorID; only those linking ``policy_id`` when given."""
        acl = self._store._acl
        tokens = [acl.resolved(acl.tokens[k]) for k in sorted(acl.tokens)]
        if policy_id:
            tokens = [t for t in tokens if any(link.id == policy_id for link in t.policies)]
        return self._index(Table.ACL_TOKENS, Table.ACL_POLICIES), tokens

    def acl_policy(self, policy_id: str) -> tuple[int, ACLPolicy | None]:
        return self._index(Table.ACL_POLICIES), self._store._acl.policies.get(policy_id)

    def acl_policy_by_name(self, name: str) -> tuple[int, ACLPolicy | None]:
        """By name, regardless of case."""
        return self._index(Table.ACL_POLICIES), self._store._acl.policy_by_name(name)

    def acl_policies(self) -> tuple[int, list[ACLPolicy]]:
        """Every policy ordered by ID."""
        policies = self._store._acl.policies
        return self._index(Table.ACL_POLICIES), [policies[k] for k in sorted(policies)]

    def acl_token_policies(self, token: ACLToken) -> tuple[int, list[ACLPolicy]]:
        """The policies a token links that exist, in link order (what an authorizer needs)."""
        return self._index(Table.ACL_POLICIES), self._store._acl.policies_of(token)

    def acl_bootstrap_allowed(self) -> tuple[int, tuple[bool, int]]:
        """(bootstrap allowed, reset index): the reset index is the last bootstrap's."""
        reset_index = self._store._acl.bootstrap_index
        return self._index(Table.ACL_TOKENS), (reset_index == 0, reset_index)
