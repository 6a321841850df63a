"""The one place the simulator touches the gateway locator's API.

The locator is driven through its public methods only. It announces a change
of path to the primary by moving the epoch :meth:`GatewayLocator.path_to`
reports (pooled connections on an older epoch retire), so every input method
here returns whether that epoch moved, which is what the server acts on (it
restarts the replication round in flight).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from wanfed_fsm import FederationState
from wanfed_gateway_locator import GatewayLocator

__all__ = ["LocatorAdapter"]


class LocatorAdapter:
    """A :class:`GatewayLocator` whose inputs say whether the primary path changed."""

    def __init__(self, *, datacenter: str, primary: str, now: float, rng: random.Random) -> None:
        self.locator = GatewayLocator(
            datacenter=datacenter, primary_datacenter=primary, now=now, rng=rng
        )
        self._primary = primary
        self._epoch = self._primary_epoch()

    def _primary_epoch(self) -> int:
        return self.locator.path_to(self._primary)[1]

    def _take_change(self) -> bool:
        epoch = self._primary_epoch()
        changed, self._epoch = epoch != self._epoch, epoch
        return changed

    def states(self, states: Sequence[FederationState]) -> bool:
        self.locator.update_from_states(states)
        return self._take_change()

    def fallback(self, addresses: Sequence[str]) -> bool:
        self.locator.refresh_fallback_addresses(addresses, "discovered")
        return self._take_change()

    def replication_result(self, error: str | None, now: float) -> bool:
        self.locator.record_replication_result(error, now)
        return self._take_change()

    def probe_result(self, error: str | None, now: float) -> bool:
        self.locator.record_local_probe_result(error, now)
        return self._take_change()

    def leadership(self, leading: bool, now: float) -> bool:
        self.locator.set_use_replication_signal(leading, now)
        return self._take_change()

    def next_probe_at(self) -> float | None:
        return self.locator.next_local_probe_at()

    def pick(self, datacenter: str) -> str:
        return self.locator.pick_gateway(datacenter)

    def pick_local(self) -> str:
        return self.locator.pick_local_gateway()

    def candidates(self, datacenter: str) -> list[str]:
        return self.locator.list_gateways(datacenter)
