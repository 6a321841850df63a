"""One simulated server: the real decision cores, carried out on the virtual clock.

Each server runs a gateway locator. Its datacenter's leader also runs
anti-entropy, and replication (a secondary) or pruning (the primary), built
fresh for each term as the real server does. The server carries out the
cores' actions against its datacenter's store and over simulated RPC, feeds
the answers back with the virtual ``now``, and keeps one timer per core at
the deadline the core returns. A restart throws every core away (the store
stays); every callback checks the *epoch* it was issued in, so nothing from a
previous life or term reaches a new core.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, cast

import msgspec

from wanfed_fsm import FederationState, gateway_lan_address
from wanfed_fsm import is_wan_federation_gateway as _opted_in
from wanfed_replication import (
    AbandonFetch,
    AntiEntropyCore,
    Applied,
    Delete,
    Diff,
    Fetch,
    FetchFailed,
    FetchNotReady,
    FetchSucceeded,
    LocalFailed,
    LocalRead,
    PruningCore,
    ReadLocal,
    ReplicationCore,
    ReplicationEvent,
    ReplicationPolicy,
    ReportOutcome,
    RestartRequested,
    Update,
    diff_by_key,
)
from wanfed_replication import ReplicationAction as _ReplAction

from ._datacenter import APPLY_LATENCY
from ._leader_drivers import AntiEntropyDriver, PruningDriver
from ._locator_adapter import LocatorAdapter
from ._network import Host
from ._primary_side import ping_handler
from ._rpc import Call, Handler
from ._timing import BLOCKING_WAIT, RPC_SLACK

if TYPE_CHECKING:
    from ._world import World

__all__ = ["SimServer"]


def _diff(
    local: Sequence[FederationState], remote: Sequence[FederationState], last: int
) -> Diff[FederationState]:
    return diff_by_key(
        local,
        remote,
        last,
        key=lambda state: state.datacenter.lower(),
        modify_index=lambda state: state.modify_index,
    )


def has_local_gateway(states: Sequence[FederationState], datacenter: str) -> bool:
    """The simulator's own reading: does the store name a usable local gateway?"""
    for state in states:
        if state.datacenter.lower() != datacenter.lower():
            continue
        for gateway in state.mesh_gateways:
            if _opted_in(gateway.service) and not gateway.has_critical_check():
                host, _ = gateway_lan_address(gateway)
                if host:
                    return True
    return False


class SimServer:
    """A server of one datacenter: locator, and the leader's cores."""

    def __init__(self, host: Host, world: World) -> None:
        self.host = host
        self.name = host.name
        self.datacenter = host.datacenter
        self.world = world
        self.epoch = 0
        self.locator: LocatorAdapter | None = None
        self.replication: ReplicationCore[FederationState] | None = None
        self.anti_entropy: AntiEntropyDriver | None = None
        self.pruning: PruningDriver | None = None
        self.leading = False
        self.knows_local_gateway = False
        # The simulator's shadow of the failure rule (checked against the locator's choices).
        self.consecutive_failures = 0
        self.direct_allowed = False
        self._armed: dict[str, float] = {}
        self._fetch: Call | None = None
        self._probe_epoch = -1
        """The epoch of the probe in flight (the locator asks for none until it lands)."""

    @property
    def is_primary(self) -> bool:
        return self.datacenter == self.world.primary

    # -- life ----------------------------------------------------------------

    def start(self) -> None:
        world = self.world
        now = world.scheduler.now
        self.epoch += 1
        self._armed = {}
        self.locator = LocatorAdapter(
            datacenter=self.datacenter,
            primary=world.primary,
            now=now,
            rng=world.scheduler.child_rng(),
        )
        self.locator.fallback(world.discovery)
        self.states_changed()

    def stop(self) -> None:
        self.epoch += 1
        self.locator = None
        self.replication = self.anti_entropy = self.pruning = None
        self.leading = False
        self._armed = {}

    def states_changed(self) -> None:
        if self.locator is None:
            return
        states = self.world.datacenters[self.datacenter].sorted_states()
        self.knows_local_gateway = has_local_gateway(states, self.datacenter)
        if self.locator.states(states):
            self._path_changed("local store changed the path")

    def discovery_changed(self) -> None:
        if self.locator is not None and self.locator.fallback(self.world.discovery):
            self._path_changed("discovery changed the path")

    def set_leader(self, leading: bool) -> None:
        if self.locator is None or leading == self.leading:
            return
        world = self.world
        now = world.scheduler.now
        self.epoch += 1
        self._armed = {}
        self.leading = leading
        self.consecutive_failures = 0
        self.direct_allowed = False
        self.replication = self.anti_entropy = self.pruning = None
        world.note(f"{self.name} {'leads' if leading else 'no longer leads'}")
        if leading:
            self.anti_entropy = AntiEntropyDriver(self, now)
            if self.is_primary:
                self.pruning = PruningDriver(self, now)
            else:
                self.replication = ReplicationCore(
                    name="federation states",
                    diff=_diff,
                    now=now,
                    policy=ReplicationPolicy(),
                    rng=world.scheduler.child_rng(),
                )
        if not self.is_primary:
            self.locator.leadership(leading, now)
        self._arm_all()

    # -- timers ----------------------------------------------------------------

    def _arm_all(self) -> None:
        self._arm("replication", self.replication)
        self._arm("anti-entropy", None if self.anti_entropy is None else self.anti_entropy.core)
        self._arm("pruning", None if self.pruning is None else self.pruning.core)
        self._arm_probe()

    def _arm(
        self,
        name: str,
        core: ReplicationCore[FederationState] | AntiEntropyCore | PruningCore | None,
    ) -> None:
        if core is None:
            return
        deadline = core.next_deadline()
        if deadline is None or self._armed.get(name) == deadline:
            return
        self._armed[name] = deadline
        epoch = self.epoch
        self.world.scheduler.at(deadline, lambda: self._fire(name, deadline, epoch))

    def _arm_probe(self) -> None:
        if self.locator is None or self._probe_epoch == self.epoch:
            return
        due = self.locator.next_probe_at()
        if due is None or self._armed.get("probe") == due:
            return
        self._armed["probe"] = due
        epoch = self.epoch
        self.world.scheduler.at(due, lambda: self._fire("probe", due, epoch))

    def _fire(self, name: str, deadline: float, epoch: int) -> None:
        if epoch != self.epoch or self._armed.get(name) != deadline:
            return
        del self._armed[name]
        now = self.world.scheduler.now
        if name == "replication" and self.replication is not None:
            self._replication_actions(self.replication.handle_timer(now))
        elif name == "anti-entropy" and self.anti_entropy is not None:
            self.anti_entropy.timer(now)
        elif name == "pruning" and self.pruning is not None:
            self.pruning.timer(now)
        elif name == "probe":
            self._probe()
        self._arm_all()

    def guard(
        self, body: Callable[[object, str | None], None]
    ) -> Callable[[object, str | None], None]:
        """Wrap an answer so that it is dropped once the server restarted or changed term."""
        epoch = self.epoch

        def answer(value: object, error: str | None) -> None:
            if epoch == self.epoch:
                body(value, error)
                self._arm_all()

        return answer

    # -- dialling the primary ------------------------------------------------

    def dial_primary(
        self,
        what: str,
        handler: Handler,
        deadline: float,
        done: Callable[[object, str | None], None],
    ) -> Call | None:
        assert self.locator is not None
        address = self.locator.pick(self.world.primary)
        if not address:
            return None
        self.world.check_dial(self, address, what)
        return self.world.rpc.call(
            self.host, self.world.primary, address, deadline, handler, self.guard(done)
        )

    # -- replication ------------------------------------------------------------

    def _replication_actions(self, actions: list[_ReplAction[FederationState]]) -> None:
        for action in actions:
            self._replication_action(action)

    def _replication_feed(self, event: ReplicationEvent[FederationState]) -> None:
        core = self.replication
        if core is not None:
            now = self.world.scheduler.now
            self._replication_actions(core.feed(event, now))

    def _replication_action(self, action: _ReplAction[FederationState]) -> None:
        world = self.world
        now = world.scheduler.now
        if isinstance(action, Fetch):
            round_ = action.round

            def fetched(value: object, error: str | None) -> None:
                if error is not None:
                    self._replication_feed(FetchFailed(round=round_, error=error))
                else:
                    index, states = cast(tuple[int, list[FederationState]], value)
                    self._replication_feed(
                        FetchSucceeded(round=round_, index=index, records=states)
                    )

            call = self.dial_primary(
                "replication",
                world.primary_side.list_handler(action.min_index),
                now + BLOCKING_WAIT * 17 / 16 + RPC_SLACK,
                fetched,
            )
            if call is None:
                self._replication_feed(FetchNotReady(round=round_, reason="no gateway known"))
            self._fetch = call
        elif isinstance(action, AbandonFetch):
            if self._fetch is not None:
                self._fetch.abandon()
        elif isinstance(action, ReadLocal):
            states = world.datacenters[self.datacenter].sorted_states()
            self._replication_feed(LocalRead(round=action.round, records=states))
        elif isinstance(action, (Delete, Update)):
            self._apply_replicated(action)
        elif isinstance(action, ReportOutcome):
            self._report(action.error)

    def _apply_replicated(self, action: Delete | Update[FederationState]) -> None:
        datacenter = self.world.datacenters[self.datacenter]
        round_ = action.round

        def land(_: object, error: str | None) -> None:
            if not self.leading:
                self._replication_feed(LocalFailed(round=round_, error="leadership lost"))
                return
            if isinstance(action, Update):
                record = action.record
                self.world.check_replicated_write(datacenter, record)
                datacenter.write_state(
                    msgspec.structs.replace(record, primary_modify_index=record.modify_index)
                )
            else:
                datacenter.delete_state(action.key)
            self._replication_feed(Applied(round=round_))

        guarded = self.guard(land)
        self.world.scheduler.after(APPLY_LATENCY, lambda: guarded(None, None))

    def _report(self, error: str | None) -> None:
        assert self.locator is not None
        now = self.world.scheduler.now
        if error is None:
            self.consecutive_failures = 0
        else:
            self.consecutive_failures += 1
            if self.consecutive_failures >= 3:
                self.direct_allowed = True
        if self.locator.replication_result(error, now):
            self._path_changed(f"replication {'failed: ' + error if error else 'succeeded'}")

    def _path_changed(self, reason: str) -> None:
        self.world.note(f"{self.name} path to primary changed ({reason})")
        if self.replication is not None:
            now = self.world.scheduler.now
            self._replication_actions(self.replication.feed(RestartRequested(reason=reason), now))
        self._arm_all()

    # -- probing the local path ------------------------------------------------

    def _probe(self) -> None:
        assert self.locator is not None
        address = self.locator.pick_local()
        now = self.world.scheduler.now
        if not address:
            self._probed(None, "no local gateway known")
            return
        self._probe_epoch = self.epoch
        self.world.rpc.call(
            self.host,
            self.world.primary,
            address,
            now + RPC_SLACK,
            ping_handler,
            self.guard(self._probed),
        )

    def _probed(self, _: object, error: str | None) -> None:
        self._probe_epoch = -1
        if self.locator is None:
            return
        if error is None:
            self.direct_allowed = False
            self.consecutive_failures = 0
        if self.locator.probe_result(error, self.world.scheduler.now):
            self._path_changed(f"probe of the local path {'failed' if error else 'worked'}")
