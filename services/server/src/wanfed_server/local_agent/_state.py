"""The local agent's state: services and checks owned by this agent, without I/O.

Theory of operation. The agent is the source of truth for the services
registered through its API; the catalog is a copy it keeps in sync. This
object holds the agent's side: service records, check definitions and each
check's current status, TTL deadlines and "critical since" times. Time is a
parameter (``now``, monotonic seconds), never read here.

Anti-entropy is a pure comparison: :meth:`LocalState.plan` takes what the
catalog shows for this node (:class:`CatalogView`) and returns the
registrations and deregistrations that would make it match
(:class:`SyncPlan`). The asyncio adapter fetches the view, runs the plan
through the RPC dispatcher and reports back with :meth:`LocalState.synced`.
Anything the catalog lost (a restore, a new leader with an older log, a
manual deregister) differs from the agent's view and is simply registered
again on the next comparison.

Only services this agent registered are compared or removed: the leader's
own ``consul`` service and node-level checks on the same node are not ours.
"""

from __future__ import annotations

import msgspec

from wanfed_fsm import (
    DeregisterRequest,
    HealthCheck,
    HealthStatus,
    Node,
    RegisterRequest,
    Service,
)

from ._definitions import CheckDefinition, DefinitionError, ServiceDefinition

__all__ = [
    "DEFAULT_MAX_CHECKS",
    "CatalogView",
    "CheckNotTtlError",
    "LocalState",
    "SyncPlan",
    "TooManyChecksError",
    "UnknownCheckError",
    "UnknownServiceError",
]

TTL_EXPIRED_OUTPUT = "TTL expired"

DEFAULT_MAX_CHECKS = 256
"""Checks one agent runs at most. Each TCP check is a task dialling every
interval (at least 1 s), so the cap bounds the load a registration can put
on the server: 256 connects a second at worst."""


class TooManyChecksError(DefinitionError):
    """A registration would take the agent past its check limit; nothing was changed."""

    def __init__(self, wanted: int, limit: int) -> None:
        super().__init__(
            f"agent check limit reached: this registration would make {wanted} checks, "
            f"the limit is {limit}; deregister services or checks first"
        )
        self.wanted = wanted
        self.limit = limit


class UnknownCheckError(LookupError):
    def __init__(self, check_id: str) -> None:
        super().__init__(f'Unknown check ID "{check_id}"')


class CheckNotTtlError(ValueError):
    def __init__(self, check_id: str) -> None:
        super().__init__(f'CheckID "{check_id}" does not have associated TTL')


class UnknownServiceError(LookupError):
    def __init__(self, service_id: str) -> None:
        super().__init__(f'Unknown service ID "{service_id}"')


class CatalogView(msgspec.Struct, frozen=True, kw_only=True):
    """What the catalog holds for this node, as far as the agent asked."""

    node_registered: bool
    services: dict[str, Service] = msgspec.field(default_factory=dict)
    checks: dict[str, HealthCheck] = msgspec.field(default_factory=dict)


class SyncPlan(msgspec.Struct, frozen=True, kw_only=True):
    register: list[RegisterRequest] = msgspec.field(default_factory=list)
    deregister: list[DeregisterRequest] = msgspec.field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.register and not self.deregister


class _Check(msgspec.Struct, kw_only=True):
    definition: CheckDefinition
    status: HealthStatus
    output: str = ""
    ttl_deadline: float | None = None
    critical_since: float | None = None

    def set_status(self, status: HealthStatus, output: str, now: float) -> bool:
        changed = (status, output) != (self.status, self.output)
        self.status, self.output = status, output
        if status == "critical":
            if self.critical_since is None:
                self.critical_since = now
        else:
            self.critical_since = None
        return changed


def _bare(record: Service | HealthCheck) -> Service | HealthCheck:
    return msgspec.structs.replace(record, create_index=0, modify_index=0)


class LocalState:
    """Services and checks registered on this agent, and their health."""

    def __init__(
        self, *, node: Node, datacenter: str, max_checks: int = DEFAULT_MAX_CHECKS
    ) -> None:
        if max_checks < 1:
            raise ValueError(f"the agent check limit must be at least 1, got {max_checks}")
        self.max_checks = max_checks
        self.node = node
        self.datacenter = datacenter
        self._services: dict[str, Service] = {}
        self._checks: dict[str, _Check] = {}
        self._removed_services: dict[str, str] = {}
        """Service id → name, for services removed locally but maybe still in the catalog."""
        self._removed_checks: set[str] = set()

    # --- registrations -------------------------------------------------------

    def add_service(
        self, definition: ServiceDefinition, now: float, *, replace_existing_checks: bool = False
    ) -> None:
        """Add or replace a service. A re-registered check keeps its current status.

        Checks of the service left out of the new definition stay, as in
        Consul, unless ``replace_existing_checks`` asks to drop them.

        Raises :class:`TooManyChecksError` (changing nothing) when the agent
        would run more than ``max_checks`` checks afterwards.
        """
        service = definition.service
        sid = service.service_id
        for check in definition.checks:
            owner = self._checks.get(check.check_id)
            if owner is not None and owner.definition.service_id != sid:
                raise ValueError(
                    f"check {check.check_id!r} already belongs to service "
                    f"{owner.definition.service_id!r}"
                )
        new_ids = {check.check_id for check in definition.checks}
        after = set(self._checks) | new_ids
        if replace_existing_checks:
            after -= {
                cid
                for cid, check in self._checks.items()
                if check.definition.service_id == sid and cid not in new_ids
            }
        if len(after) > self.max_checks and len(after) > len(self._checks):
            raise TooManyChecksError(len(after), self.max_checks)
        self._services[sid] = service
        self._removed_services.pop(sid, None)
        if replace_existing_checks:
            for check_id in [
                cid
                for cid, check in self._checks.items()
                if check.definition.service_id == sid and cid not in new_ids
            ]:
                del self._checks[check_id]
                self._removed_checks.add(check_id)
        for check in definition.checks:
            previous = self._checks.get(check.check_id)
            entry = _Check(definition=check, status=check.status)
            if previous is not None:
                entry.status, entry.output = previous.status, previous.output
                entry.critical_since = previous.critical_since
            elif check.status == "critical":
                entry.critical_since = now
            if check.ttl is not None:
                entry.ttl_deadline = now + check.ttl
            self._checks[check.check_id] = entry
            self._removed_checks.discard(check.check_id)

    def remove_service(self, service_id: str) -> None:
        service = self._services.pop(service_id, None)
        if service is None:
            raise UnknownServiceError(service_id)
        self._removed_services[service_id] = service.service
        for check_id in [
            cid for cid, c in self._checks.items() if c.definition.service_id == service_id
        ]:
            del self._checks[check_id]

    def update_ttl(self, check_id: str, status: HealthStatus, output: str, now: float) -> bool:
        """A TTL heartbeat (``/v1/agent/check/pass|warn|fail``); returns True if health changed."""
        check = self._checks.get(check_id)
        if check is None:
            raise UnknownCheckError(check_id)
        ttl = check.definition.ttl
        if ttl is None:
            raise CheckNotTtlError(check_id)
        check.ttl_deadline = now + ttl
        return check.set_status(status, output, now)

    def record_result(self, check_id: str, status: HealthStatus, output: str, now: float) -> bool:
        """The outcome of one run of an agent-executed check; False if the check is gone."""
        check = self._checks.get(check_id)
        if check is None:
            return False
        return check.set_status(status, output, now)

    # --- time ----------------------------------------------------------------

    def expire(self, now: float) -> bool:
        """Turn TTL checks whose deadline passed critical; True if any health changed."""
        changed = False
        for check in self._checks.values():
            if check.ttl_deadline is not None and check.ttl_deadline <= now:
                check.ttl_deadline = None
                changed |= check.set_status("critical", TTL_EXPIRED_OUTPUT, now)
        return changed

    def services_to_reap(self, now: float) -> list[str]:
        """Services with a check critical for longer than its ``DeregisterCriticalServiceAfter``."""
        doomed: set[str] = set()
        for check in self._checks.values():
            after = check.definition.deregister_critical_after
            since = check.critical_since
            if after is not None and since is not None and now - since >= after:
                doomed.add(check.definition.service_id)
        return sorted(doomed & self._services.keys())

    def next_deadline(self) -> float | None:
        """When :meth:`expire` or :meth:`services_to_reap` may next have work."""
        deadlines: list[float] = []
        for check in self._checks.values():
            if check.ttl_deadline is not None:
                deadlines.append(check.ttl_deadline)
            after = check.definition.deregister_critical_after
            if after is not None and check.critical_since is not None:
                deadlines.append(check.critical_since + after)
        return min(deadlines, default=None)

    # --- reads ---------------------------------------------------------------

    def services(self) -> dict[str, Service]:
        return dict(self._services)

    def definitions(self) -> list[ServiceDefinition]:
        """Every service with its checks, as registered: what a restart needs back."""
        return [
            ServiceDefinition(
                service=service,
                checks=[
                    check.definition
                    for check in self._checks.values()
                    if check.definition.service_id == sid
                ],
            )
            for sid, service in sorted(self._services.items())
        ]

    def check_definitions(self) -> list[CheckDefinition]:
        return [check.definition for check in self._checks.values()]

    def health_check(self, check_id: str) -> HealthCheck:
        check = self._checks.get(check_id)
        if check is None:
            raise UnknownCheckError(check_id)
        definition = check.definition
        service = self._services[definition.service_id]
        return HealthCheck(
            node=self.node.node,
            check_id=check_id,
            name=definition.name,
            status=check.status,
            notes=definition.notes,
            output=check.output,
            service_id=definition.service_id,
            service_name=service.service,
            definition=definition.definition,
        )

    def checks(self) -> dict[str, HealthCheck]:
        return {check_id: self.health_check(check_id) for check_id in sorted(self._checks)}

    def watched_service_names(self) -> set[str]:
        """Service names whose catalog entries the next comparison needs."""
        names = {service.service for service in self._services.values()}
        return names | set(self._removed_services.values())

    # --- anti-entropy --------------------------------------------------------

    def plan(self, catalog: CatalogView) -> SyncPlan:
        """Writes that make the catalog match this agent for the services it owns.

        ``catalog.services`` must hold this node's instances of every name in
        :meth:`watched_service_names` plus the removed ones it still shows;
        a service is written whole (with all its checks) when anything about
        it differs, which is what a catalog registration replaces anyway.
        """
        checks = self.checks()
        register: list[RegisterRequest] = []
        for sid in sorted(self._services):
            service = self._services[sid]
            own = [check for check in checks.values() if check.service_id == sid]
            seen = catalog.services.get(sid)
            same = seen is not None and _bare(seen) == service
            same = same and all(
                check.check_id in catalog.checks and _bare(catalog.checks[check.check_id]) == check
                for check in own
            )
            if not same:
                register.append(
                    RegisterRequest(
                        datacenter=self.datacenter,
                        node=self.node,
                        service=service,
                        checks=own,
                        skip_node_update=catalog.node_registered,
                    )
                )
        deregister = [
            DeregisterRequest(datacenter=self.datacenter, node=self.node.node, service_id=sid)
            for sid in sorted(self._removed_services)
            if sid in catalog.services
        ]
        deregister += [
            DeregisterRequest(datacenter=self.datacenter, node=self.node.node, check_id=cid)
            for cid in sorted(self._removed_checks)
            if cid in catalog.checks and cid not in self._checks
        ]
        return SyncPlan(register=register, deregister=deregister)

    def synced(self, catalog: CatalogView, plan: SyncPlan) -> None:
        """Forget removals the catalog no longer shows or that ``plan`` carried out."""
        gone_services = {r.service_id for r in plan.deregister if r.service_id}
        gone_checks = {r.check_id for r in plan.deregister if r.check_id}
        registered = {r.service.service_id for r in plan.register if r.service is not None}
        self._removed_services = {
            sid: name
            for sid, name in self._removed_services.items()
            if sid not in gone_services and (sid in catalog.services or sid in registered)
        }
        self._removed_checks = {
            cid for cid in self._removed_checks if cid not in gone_checks and cid in catalog.checks
        }
