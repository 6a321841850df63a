"""The gateway locator: which mesh gateway to dial to reach a datacenter.

Theory of operation. Every server keeps three address lists:

* the *local* gateways (their LAN addresses) and the *primary's* gateways
  (their WAN addresses), both taken from the replicated federation states,
  counting only gateways that opted into WAN federation and have no critical
  check;
* the *fallback* addresses of the primary's gateways, from the configured or
  discovered ``primary_gateways``.

Traffic to a secondary datacenter always leaves through the local gateways.
Traffic to the primary normally does too (two hops: local gateway, then a
primary gateway). Dialling the primary's gateways directly is the bootstrap
and recovery path: it uses the union of the replicated and the fallback
addresses, so a secondary whose replicated list went stale (every primary
gateway replaced) still finds a live one among the fallbacks.

Which path is in use follows the replication history, because federation-state
replication is itself dialled through :meth:`GatewayLocator.pick_gateway`: its
outcome measures the path in use. Three consecutive failures since the last
success switch to the direct path. Only the leader, which runs replication,
acts on that signal; followers always trust the local gateways. A locator
starts out as if replication had just succeeded, so a restarted server that
already holds federation states uses its local gateways from the first dial.

Going back is where wanfed departs from the reference. There, the next
replication success switches back to the local gateways; but while direct,
that success measures the *direct* path, so a leader whose local gateways are
still cut off flips back onto them, fails three times, goes direct, succeeds,
and so on: it flaps and a share of its cross-datacenter requests fail. Here a
success over the direct path keeps the leader direct; the local path is
*probed* instead (every :data:`LOCAL_PROBE_INTERVAL` seconds the runtime
proves, through one local gateway, that a primary server answers), and only
a successful probe switches back. The probe's I/O lives in the runtime; this
core only says when one is due (:meth:`GatewayLocator.next_local_probe_at`)
and takes its outcome (:meth:`GatewayLocator.record_local_probe_result`).

The locator is a plain object: every method that depends on time takes
``now`` (seconds, monotonic or wall clock, as long as the caller is
consistent), so every scenario replays deterministically in tests.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Sequence
from typing import Final, Literal

import msgspec

from wanfed_fsm import (
    FederationState,
    format_host_port,
    gateway_lan_address,
    gateway_wan_address,
    is_wan_federation_gateway,
)

__all__ = [
    "FAILURES_BEFORE_DIRECT",
    "LOCAL_PROBE_INTERVAL",
    "AddressSource",
    "Candidate",
    "DatacenterRoute",
    "GatewayLocator",
    "LocalProbeStatus",
    "LocatorStatus",
    "Path",
    "ReplicationStatus",
    "merge_sorted_unique",
]

log = logging.getLogger("wanfed.gateway_locator")

FAILURES_BEFORE_DIRECT: Final = 3
"""Consecutive replication failures that make the leader bypass its local gateways."""

LOCAL_PROBE_INTERVAL: Final = 5.0
"""Seconds between probes of the local path while the leader dials the primary directly.

Short enough that a healed path is used again within seconds, long enough
that a cut path costs one failed dial per interval, not a stream of them."""

Path = Literal["local-gateways", "primary-gateways", "same-datacenter", "none"]
AddressSource = Literal["local", "replicated", "fallback"]

_LOCAL_CHOICE_MESSAGE: Final = (
    "will dial the primary datacenter using our local mesh gateways if possible"
)
_DIRECT_CHOICE_MESSAGE: Final = "will dial the primary datacenter through its mesh gateways"


class Candidate(msgspec.Struct, frozen=True, kw_only=True):
    """One address the locator may hand out, and where it learnt it."""

    address: str
    source: AddressSource


class DatacenterRoute(msgspec.Struct, frozen=True, kw_only=True):
    """How this server reaches one datacenter right now, and why."""

    datacenter: str
    path: Path
    candidates: list[Candidate]
    reason: str


class ReplicationStatus(msgspec.Struct, frozen=True, kw_only=True):
    """The replication history the path choice is made from; ages in seconds."""

    use_replication_signal: bool
    last_success_age: float | None
    last_failure_age: float | None
    consecutive_successes: int
    consecutive_failures: int
    last_error: str


class LocalProbeStatus(msgspec.Struct, frozen=True, kw_only=True):
    """The probes of the local path since the leader went direct; ages in seconds."""

    attempts: int
    consecutive_failures: int
    last_attempt_age: float | None
    last_error: str


class LocatorStatus(msgspec.Struct, frozen=True, kw_only=True):
    """Everything an operator needs to understand the locator's choices."""

    datacenter: str
    primary_datacenter: str
    populated: bool
    dial_primary_through_local_gateways: bool
    fallback_source: str
    replication: ReplicationStatus
    routes: list[DatacenterRoute]
    local_probe: LocalProbeStatus | None = None
    """Set while the leader dials the primary directly and probes its local path."""


def merge_sorted_unique(left: Sequence[str], right: Sequence[str]) -> list[str]:
    """Zipper-merge two sorted lists, dropping values of ``right`` already in ``left``.

    Duplicates inside one list survive: they only bias the random pick, and
    keeping them makes the merge a faithful union of the two sources.
    """
    merged: list[str] = []
    i = j = 0
    while i < len(left) and j < len(right):
        if left[i] < right[j]:
            merged.append(left[i])
            i += 1
        elif right[j] < left[i]:
            merged.append(right[j])
            j += 1
        else:
            merged.append(left[i])
            i += 1
            j += 1
    merged.extend(left[i:])
    merged.extend(right[j:])
    return merged


def _render(states: Iterable[FederationState], datacenter: str, *, wan: bool) -> list[str]:
    addresses: list[str] = []
    for state in states:
        if state.datacenter.lower() != datacenter.lower():
            continue
        for gateway in state.mesh_gateways:
            if not is_wan_federation_gateway(gateway.service) or gateway.has_critical_check():
                continue
            host, port = gateway_wan_address(gateway) if wan else gateway_lan_address(gateway)
            if host:
                addresses.append(format_host_port(host, port))
    return sorted(addresses)


class GatewayLocator:
    """Answers "which gateway do I dial to reach datacenter X?" for one server."""

    def __init__(
        self,
        *,
        datacenter: str,
        primary_datacenter: str,
        now: float,
        rng: random.Random | None = None,
        assume_healthy_at_start: bool = True,
        local_probe_interval: float = LOCAL_PROBE_INTERVAL,
        probe_local_path: bool = True,
    ) -> None:
        """``assume_healthy_at_start`` records one synthetic replication success.

        That is the fix for restarted secondaries dialling the primary's
        gateways directly before replication ran once; ``False`` reproduces the
        original behaviour, where a server with no history dials directly.
        ``probe_local_path=False`` likewise reproduces the reference's way
        back: the next replication success, over whichever path, returns to
        the local gateways (it flaps while the local path stays broken).
        """
        self.datacenter = datacenter
        self.primary_datacenter = primary_datacenter
        self._rng = rng if rng is not None else random.SystemRandom()
        self._populated = False
        self._supports_federation_states = False
        self._local: list[str] = []
        self._primary: list[str] = []
        self._known_datacenters: list[str] = []
        self._fallback: list[str] = []
        self._fallback_source = ""
        self._primary_ready = False
        self._use_replication_signal = False
        self._last_success: float | None = None
        self._last_failure: float | None = None
        self._successes = 0
        self._failures = 0
        self._last_error = ""
        self._direct = False
        """The leader left its local gateways after repeated failures (until a probe works)."""
        self._direct_since = 0.0
        self._direct_after: str = ""
        self._probe_interval = local_probe_interval
        self._probe_local_path = probe_local_path
        self._probe_attempts = 0
        self._probe_failures = 0
        self._last_probe: float | None = None
        self._probe_error = ""
        if assume_healthy_at_start:
            self._record_success(now)
        self._choice = self.dial_primary_through_local_gateway()
        self._primary_path: Path = self._path(primary_datacenter)
        self._primary_epoch = 0
        """Moves with every change of :attr:`_primary_path`; see :meth:`path_to`."""

    # --- inputs ---------------------------------------------------------------

    @property
    def is_primary(self) -> bool:
        return self.datacenter == self.primary_datacenter

    def update_from_states(self, states: Sequence[FederationState]) -> bool:
        """Take the federation states from the local store; True when a list changed."""
        self._populated = True
        if states:
            self._supports_federation_states = True
        local = _render(states, self.datacenter, wan=False)
        primary = _render(states, self.primary_datacenter, wan=True)
        self._known_datacenters = sorted({state.datacenter for state in states})
        changed = False
        if local != self._local:
            log.info(
                "updated local mesh gateways",
                extra={"gateways": local, "previous": self._local},
            )
            self._local = local
            changed = True
        if primary != self._primary:
            log.info(
                "updated mesh gateways of the primary datacenter",
                extra={"gateways": primary, "previous": self._primary},
            )
            self._primary = primary
            changed = True
            if primary and not self._primary_ready:
                self._primary_ready = True
                log.info("learnt the primary datacenter's mesh gateways from replication")
        if changed:
            # Not on a first read that changes no list (an empty store): nothing
            # was dialled before it, and a restarted server whose log replay has
            # not restored its states yet would report a path it never uses.
            self._check_primary_path()
        return changed

    def refresh_fallback_addresses(
        self, addresses: Iterable[str], source: str = "configured"
    ) -> bool:
        """Replace the fallback list (from ``primary_gateways``); True when it changed."""
        fallback = sorted(addresses)
        self._fallback_source = source
        if fallback == self._fallback:
            return False
        self._fallback = fallback
        log.info(
            "updated fallback list of primary mesh gateways",
            extra={"gateways": fallback, "source": source},
        )
        self._check_primary_path()
        return True

    def record_replication_result(
        self, error: str | None, now: float, *, from_replication: bool = True
    ) -> None:
        """Feed one federation-state replication outcome (``None`` = success)."""
        before = self.dial_primary_through_local_gateway()
        if error is None:
            # While direct, this success measured the direct path, not the local
            # one: it does not switch back (a probe of the local path does).
            self._record_success(now)
            if from_replication:
                self._use_replication_signal = True
            if not self._probe_local_path:
                self._direct = False
        else:
            self._last_failure = now
            self._failures += 1
            self._successes = 0
            self._last_error = error
            if (
                self._use_replication_signal
                and not self._direct
                and self._failures >= FAILURES_BEFORE_DIRECT
            ):
                self._go_direct(now)
        self._note_choice(before)

    def _go_direct(self, now: float) -> None:
        self._direct = True
        self._direct_since = now
        self._direct_after = (
            f"{self._failures} consecutive replication failures through the local gateways "
            f"(last error: {self._last_error})"
        )
        self._probe_attempts = 0
        self._probe_failures = 0
        self._last_probe = None
        self._probe_error = ""

    def record_local_probe_result(self, error: str | None, now: float) -> None:
        """Feed one probe of the local path (``None`` = a primary server answered).

        A probe that finishes after the leader already left direct mode (a new
        term, a lost leadership) is stale and ignored.
        """
        if not self.probing_local_path:
            return
        before = self.dial_primary_through_local_gateway()
        self._probe_attempts += 1
        self._last_probe = now
        if error is None:
            self._direct = False
            # Three fresh failures are needed to leave the local path again.
            self._failures = 0
            self._last_error = ""
        else:
            self._probe_failures += 1
            self._probe_error = error
        self._note_choice(before)

    @property
    def probing_local_path(self) -> bool:
        """True while the leader dials the primary directly and waits for its local path."""
        return (
            self._probe_local_path
            and not self.is_primary
            and self._use_replication_signal
            and self._direct
        )

    def next_local_probe_at(self) -> float | None:
        """When the local path should be probed next; ``None`` when no probe is wanted."""
        if not self.probing_local_path:
            return None
        since = self._direct_since if self._last_probe is None else self._last_probe
        return since + self._probe_interval

    def pick_local_gateway(self) -> str:
        """A random local gateway for a probe; ``""`` when none is known."""
        if not self._local:
            return ""
        return self._local[self._rng.randrange(len(self._local))]

    def set_use_replication_signal(self, enabled: bool, now: float) -> None:
        """Leadership gained (replication starts) or lost (it stops).

        Either way one synthetic success is recorded, so a new leader starts
        on its local gateways and an old one forgets its failures.
        """
        before = self.dial_primary_through_local_gateway()
        self._use_replication_signal = enabled
        self._direct = False
        self._record_success(now)
        self._note_choice(before)

    def _record_success(self, now: float) -> None:
        self._last_success = now
        self._successes += 1
        self._failures = 0
        self._last_error = ""

    def _note_choice(self, before: bool) -> None:
        after = self.dial_primary_through_local_gateway()
        self._choice = after
        self._check_primary_path()
        if after != before and not self.is_primary:
            log.info(
                _LOCAL_CHOICE_MESSAGE if after else _DIRECT_CHOICE_MESSAGE,
                extra={
                    "consecutive_failures": self._failures,
                    "reason": self._choice_reason(None),
                    "next": (
                        "probing the local gateways; a working probe switches back"
                        if self._direct
                        else "three consecutive replication failures switch to direct"
                    ),
                },
            )

    def _check_primary_path(self) -> None:
        if self.is_primary:
            return
        path = self._path(self.primary_datacenter)
        if path != self._primary_path:
            self._primary_path = path
            self._primary_epoch += 1

    # --- decisions ------------------------------------------------------------

    @property
    def populated(self) -> bool:
        return self._populated

    @property
    def supports_federation_states(self) -> bool:
        """Latched once any federation state was seen (never unlatched)."""
        return self._supports_federation_states

    @property
    def primary_gateways_ready(self) -> bool:
        """True once replication (never the fallback list) named a primary gateway."""
        return self._primary_ready

    def fallback_addresses(self) -> list[str]:
        return list(self._fallback)

    def dial_primary_through_local_gateway(self) -> bool:
        """True when primary-bound traffic should leave through the local gateways."""
        if self.is_primary:
            return False
        if not self._use_replication_signal:
            return True
        if self._last_success is None and self._last_failure is None:
            return False
        return not self._direct

    def _probe_text(self, now: float | None) -> str:
        if self._probe_attempts == 0:
            return "probing local gateways (no probe yet)"
        age = ""
        if now is not None and self._last_probe is not None:
            age = f" {now - self._last_probe:.0f}s ago"
        return (
            f"probing local gateways ({self._probe_failures} probe(s) failed, "
            f"last{age}: {self._probe_error})"
        )

    def _choice_reason(self, now: float | None) -> str:
        if self.is_primary:
            return "this is the primary datacenter"
        if not self._use_replication_signal:
            return "not running replication: followers trust the local gateways"
        if self._last_success is None and self._last_failure is None:
            return "no replication history yet"
        if self._direct:
            if self._failures >= FAILURES_BEFORE_DIRECT:
                why = (
                    f"{self._failures} consecutive replication failures since the last success "
                    f"(last error: {self._last_error})"
                )
            else:
                age = "" if now is None else f" {now - self._direct_since:.0f}s ago"
                how = (
                    "replication works directly"
                    if self._failures == 0
                    else f"{self._failures} replication failure(s) since the last success "
                    f"(last error: {self._last_error})"
                )
                why = f"direct since{age} after {self._direct_after}; {how}"
            return f"{why}; {self._probe_text(now)}"
        if self._failures == 0:
            return "the last replication round succeeded"
        if self._failures < FAILURES_BEFORE_DIRECT:
            return (
                f"{self._failures} consecutive replication failure(s), "
                f"fewer than {FAILURES_BEFORE_DIRECT}"
            )
        return (
            f"{self._failures} consecutive replication failures since the last success "
            f"(last error: {self._last_error})"
        )

    def _path(self, datacenter: str) -> Path:
        """The path :meth:`_candidates` takes, without building the candidates
        (every RPC call asks for it)."""
        if not self._populated:
            return "none"
        if datacenter != self.primary_datacenter:
            return "local-gateways"
        if self.is_primary:
            return "primary-gateways"
        if self.dial_primary_through_local_gateway() and self._local:
            return "local-gateways"
        return "primary-gateways"

    def _candidates(self, datacenter: str) -> tuple[Path, list[Candidate]]:
        path = self._path(datacenter)
        if path == "none":
            return "none", []
        if path == "local-gateways":
            return "local-gateways", [Candidate(address=a, source="local") for a in self._local]
        if self.is_primary:
            return "primary-gateways", [
                Candidate(address=a, source="replicated") for a in self._primary
            ]
        replicated = set(self._primary)
        merged = merge_sorted_unique(self._primary, self._fallback)
        candidates = [
            Candidate(address=a, source="replicated" if a in replicated else "fallback")
            for a in merged
        ]
        return "primary-gateways", candidates

    def path_to(self, datacenter: str) -> tuple[Path, int]:
        """The path to ``datacenter`` and its epoch, which moves whenever the path changes.

        Only primary-bound traffic changes path after the first read of the
        store: every change of the candidates' kind between the local gateways
        and the primary's gateways (replicated or fallback), either way — the
        leader's switches, and also bootstrap, where a server with no local
        gateway yet dials the primary's gateways and moves to its local ones
        when they appear. Connections dialled along an old path keep using
        it; their owner compares epochs to retire them.
        """
        path = self._path(datacenter)
        if datacenter == self.primary_datacenter and not self.is_primary:
            return path, self._primary_epoch
        return path, 0

    def list_gateways(self, datacenter: str) -> list[str]:
        """Every address :meth:`pick_gateway` may choose from for ``datacenter``."""
        return [candidate.address for candidate in self._candidates(datacenter)[1]]

    def pick_gateway(self, datacenter: str) -> str:
        """A uniformly random candidate; ``""`` when none is known."""
        gateways = self.list_gateways(datacenter)
        if not gateways:
            return ""
        return gateways[self._rng.randrange(len(gateways))]

    # --- operator view --------------------------------------------------------

    def status(self, now: float) -> LocatorStatus:
        """A snapshot of choices and their reasons, for the status API and CLI."""
        datacenters = sorted({*self._known_datacenters, self.primary_datacenter, self.datacenter})
        routes = [self._route(dc, now) for dc in datacenters]
        return LocatorStatus(
            datacenter=self.datacenter,
            primary_datacenter=self.primary_datacenter,
            populated=self._populated,
            dial_primary_through_local_gateways=self.dial_primary_through_local_gateway(),
            fallback_source=self._fallback_source,
            replication=ReplicationStatus(
                use_replication_signal=self._use_replication_signal,
                last_success_age=None if self._last_success is None else now - self._last_success,
                last_failure_age=None if self._last_failure is None else now - self._last_failure,
                consecutive_successes=self._successes,
                consecutive_failures=self._failures,
                last_error=self._last_error,
            ),
            routes=routes,
            local_probe=(
                LocalProbeStatus(
                    attempts=self._probe_attempts,
                    consecutive_failures=self._probe_failures,
                    last_attempt_age=None if self._last_probe is None else now - self._last_probe,
                    last_error=self._probe_error,
                )
                if self.probing_local_path
                else None
            ),
        )

    def _route(self, datacenter: str, now: float) -> DatacenterRoute:
        if datacenter == self.datacenter:
            return DatacenterRoute(
                datacenter=datacenter,
                path="same-datacenter",
                candidates=[],
                reason="servers of this datacenter are dialled directly",
            )
        path, candidates = self._candidates(datacenter)
        if not self._populated:
            reason = "local state not initialized: no federation states read yet"
        elif not candidates:
            path = "none"
            reason = "no healthy, opted-in gateway is known for this path"
        elif datacenter != self.primary_datacenter or self.is_primary:
            reason = "traffic to this datacenter leaves through the local gateways"
        elif path == "local-gateways":
            reason = self._choice_reason(now)
        elif self.dial_primary_through_local_gateway():
            reason = "no healthy local gateway: dialling the primary's gateways directly"
        else:
            reason = self._choice_reason(now)
        return DatacenterRoute(
            datacenter=datacenter, path=path, candidates=candidates, reason=reason
        )
