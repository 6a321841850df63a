"""Agent service definitions: Consul's ``/v1/agent/service/register`` JSON, validated.

Consul decodes these bodies leniently: keys match case-insensitively and in
snake_case (``tagged_addresses``, ``enabletagoverride``), which is exactly what
clients such as py-consul send. This module accepts the same spellings,
keeps user data (``Meta`` values, ``TaggedAddresses`` names) untouched, and
turns everything into frozen records: a :class:`ServiceDefinition` holding the
catalog :class:`~wanfed_fsm.Service` and one :class:`CheckDefinition` per
check, with Consul's check ids already assigned.
"""

from __future__ import annotations

import logging
from typing import Final

import msgspec

from wanfed_agent.config import parse_duration
from wanfed_fsm import (
    HEALTH_STATUSES,
    HealthCheckDefinition,
    HealthStatus,
    Service,
    ServiceAddress,
)

__all__ = [
    "MIN_CHECK_INTERVAL",
    "RESERVED_SERVICE",
    "CheckDefinition",
    "DefinitionError",
    "ServiceDefinition",
    "parse_service_definition",
]


logger = logging.getLogger(__name__)

RESERVED_SERVICE: Final = "consul"

MIN_CHECK_INTERVAL: Final = 1.0
"""Seconds; a shorter ``Interval`` is raised to it with a warning, as Consul's
agent does. A check every millisecond would only burn the server's CPU."""


class DefinitionError(ValueError):
    """A service or check definition that cannot be registered; the text says why."""


class CheckDefinition(msgspec.Struct, frozen=True, kw_only=True):
    """One agent-run check. ``ttl``/``interval``/``timeout`` are seconds."""

    check_id: str
    name: str
    service_id: str
    ttl: float | None = None
    tcp: str = ""
    interval: float = 0.0
    timeout: float = 10.0
    deregister_critical_after: float | None = None
    status: HealthStatus = "critical"
    notes: str = ""
    definition: HealthCheckDefinition = msgspec.field(default_factory=HealthCheckDefinition)


class ServiceDefinition(msgspec.Struct, frozen=True, kw_only=True):
    service: Service
    checks: list[CheckDefinition] = msgspec.field(default_factory=list)


def _norm(key: str) -> str:
    return key.replace("_", "").replace("-", "").lower()


def _fields(raw: object, what: str, known: set[str]) -> dict[str, object]:
    """Map an object's keys to their normalised spelling, ignoring unknown keys like Consul."""
    if not isinstance(raw, dict):
        raise DefinitionError(f"{what} must be a JSON object")
    out: dict[str, object] = {}
    for key, value in raw.items():
        name = _norm(str(key))
        if name in known:
            out[name] = value
    return out


def _text(fields: dict[str, object], key: str, what: str) -> str:
    value = fields.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DefinitionError(f"{what} must be a string, got {value!r}")
    return value


def _duration(fields: dict[str, object], key: str, what: str) -> tuple[str, float | None]:
    """A Go duration string (Consul's JSON) or an integer of nanoseconds (Go's encoding)."""
    value = fields.get(key)
    if value is None or value == "":
        return "", None
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value / 1e9
        return f"{seconds}s", seconds
    try:
        return str(value), parse_duration(value)
    except ValueError as exc:
        raise DefinitionError(f"{what}: {exc}") from None


def _string_map(fields: dict[str, object], key: str, what: str) -> dict[str, str]:
    value = fields.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise DefinitionError(f"{what} must be an object of strings")
    return dict(value)


_SERVICE_KEYS = {
    "id",
    "name",
    "service",
    "kind",
    "tags",
    "address",
    "port",
    "meta",
    "taggedaddresses",
    "check",
    "checks",
    "enabletagoverride",
    "weights",
}
_CHECK_KEYS = {
    "id",
    "checkid",
    "name",
    "ttl",
    "tcp",
    "interval",
    "timeout",
    "deregistercriticalserviceafter",
    "status",
    "notes",
    "http",
    "args",
    "scriptargs",
    "grpc",
    "dockercontainerid",
    "h2ping",
    "udp",
    "aliasservice",
    "aliasnode",
}
_UNSUPPORTED_CHECKS = ("http", "args", "scriptargs", "grpc", "dockercontainerid", "h2ping", "udp")


def parse_service_definition(raw: object) -> ServiceDefinition:
    """Validate a decoded JSON body; raise :class:`DefinitionError` with a message for a 400."""
    fields = _fields(raw, "service definition", _SERVICE_KEYS)
    name = _text(fields, "name", "Name") or _text(fields, "service", "Service")
    if not name:
        raise DefinitionError("Missing service name")
    service_id = _text(fields, "id", "ID") or name
    if RESERVED_SERVICE in (name, service_id):
        # the leader keeps the servers' own "consul" entry; two writers would fight over it
        raise DefinitionError(f'Service name and ID "{RESERVED_SERVICE}" are reserved for servers')
    kind = _text(fields, "kind", "Kind")
    if kind not in ("", "mesh-gateway"):
        raise DefinitionError(f'Invalid service kind {kind!r}: only "" and "mesh-gateway"')
    tags = fields.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise DefinitionError("Tags must be a list of strings")
    port = fields.get("port", 0) or 0
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 0xFFFF:
        raise DefinitionError(f"Invalid service port {port!r}: expected 0..65535")
    try:
        service = Service(
            kind=kind,  # type: ignore[arg-type]  # checked just above
            id=service_id,
            service=name,
            tags=list(tags),
            address=_text(fields, "address", "Address"),
            port=port,
            tagged_addresses=_tagged_addresses(fields.get("taggedaddresses")),
            meta=_string_map(fields, "meta", "Meta"),
        )
    except (ValueError, msgspec.ValidationError) as exc:
        raise DefinitionError(f"Invalid service: {exc}") from None

    raw_checks: list[object] = []
    if fields.get("check") is not None:
        raw_checks.append(fields["check"])
    more = fields.get("checks")
    if more is not None:
        if not isinstance(more, list):
            raise DefinitionError("Checks must be a list of check definitions")
        raw_checks.extend(more)
    checks = [
        _check(raw_check, service, position, len(raw_checks))
        for position, raw_check in enumerate(raw_checks, start=1)
    ]
    ids = [check.check_id for check in checks]
    if len(set(ids)) != len(ids):
        raise DefinitionError(f"Duplicate check ids in service definition: {ids}")
    return ServiceDefinition(service=service, checks=checks)


def _tagged_addresses(raw: object) -> dict[str, ServiceAddress]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise DefinitionError("TaggedAddresses must be an object")
    out: dict[str, ServiceAddress] = {}
    for tag, value in raw.items():
        what = f"TaggedAddresses[{tag!r}]"
        if isinstance(value, str):  # py-consul's documented {"lan": "<address>"}
            out[str(tag)] = ServiceAddress(address=value)
            continue
        fields = _fields(value, what, {"address", "port"})
        port = fields.get("port", 0) or 0
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 0xFFFF:
            raise DefinitionError(f"{what} port {port!r} is not 0..65535")
        out[str(tag)] = ServiceAddress(address=_text(fields, "address", what), port=port)
    return out


def _check(raw: object, service: Service, position: int, count: int) -> CheckDefinition:
    what = f"check {position}"
    fields = _fields(raw, what, _CHECK_KEYS)
    for key in _UNSUPPORTED_CHECKS:
        if fields.get(key):
            raise DefinitionError(
                f"{what}: {key} checks are not supported by this agent; use TTL or TCP"
            )
    check_id = _text(fields, "checkid", "CheckID") or _text(fields, "id", "ID")
    if not check_id:
        # Consul's ids: one check is "service:<id>", several are numbered from 1.
        check_id = f"service:{service.service_id}"
        if count > 1:
            check_id = f"{check_id}:{position}"
    ttl_text, ttl = _duration(fields, "ttl", f"{what} TTL")
    tcp = _text(fields, "tcp", f"{what} TCP")
    interval_text, interval = _duration(fields, "interval", f"{what} Interval")
    timeout_text, timeout = _duration(fields, "timeout", f"{what} Timeout")
    dereg_text, dereg = _duration(
        fields, "deregistercriticalserviceafter", f"{what} DeregisterCriticalServiceAfter"
    )
    if ttl is not None and tcp:
        raise DefinitionError(f"{what}: a check has either a TTL or a TCP target, not both")
    if ttl is None and not tcp:
        raise DefinitionError(f"{what}: check needs a TTL or a TCP target with an Interval")
    if ttl is not None and ttl <= 0:
        raise DefinitionError(f"{what}: TTL must be greater than zero")
    if tcp:
        if interval is None or interval <= 0:
            raise DefinitionError(f"{what}: TCP check needs an Interval greater than zero")
        host, sep, port_text = tcp.rpartition(":")
        if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) <= 0xFFFF:
            raise DefinitionError(f"{what}: TCP target {tcp!r} is not host:port")
        if interval < MIN_CHECK_INTERVAL:
            logger.warning(
                "check interval below the minimum check_id=%s interval=%s minimum=%gs; "
                "running it every %gs instead",
                check_id,
                interval_text,
                MIN_CHECK_INTERVAL,
                MIN_CHECK_INTERVAL,
            )
            interval, interval_text = MIN_CHECK_INTERVAL, f"{MIN_CHECK_INTERVAL:g}s"
    status = _text(fields, "status", f"{what} Status") or "critical"
    if status not in HEALTH_STATUSES:
        raise DefinitionError(f"{what}: Status {status!r} is not passing, warning or critical")
    return CheckDefinition(
        check_id=check_id,
        name=_text(fields, "name", f"{what} Name") or f"Service '{service.service}' check",
        service_id=service.service_id,
        ttl=ttl,
        tcp=tcp,
        interval=interval or 0.0,
        timeout=timeout if timeout is not None and timeout > 0 else 10.0,
        deregister_critical_after=dereg,
        status=status,  # type: ignore[arg-type]  # checked against HEALTH_STATUSES
        notes=_text(fields, "notes", f"{what} Notes"),
        definition=HealthCheckDefinition(
            tcp=tcp,
            ttl=ttl_text,
            interval=interval_text,
            timeout=timeout_text,
            deregister_critical_service_after=dereg_text,
        ),
    )
