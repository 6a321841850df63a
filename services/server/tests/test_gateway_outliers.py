"""The gateway's memory of upstreams that failed slowly (sans-I/O)."""

from __future__ import annotations

import pytest

from wanfed_server.gateway._outliers import UpstreamHealth
from wanfed_server.gateway._routes import Upstream

OLD_A, OLD_B, NEW = (
    Upstream("198.19.0.11", 8443),
    Upstream("198.19.0.12", 8443),
    Upstream("198.19.0.13", 8443),
)


def test_a_refused_connect_is_tried_again_by_the_next_client() -> None:
    health = UpstreamHealth(ejection=15.0)
    assert health.connect_failed(OLD_A, 100.0, slow=False) is False
    assert health.candidates([OLD_A], 3, 100.0) == [OLD_A]
    assert health.ejected(100.0) == []


def test_a_slow_failure_sets_the_upstream_aside_until_the_ejection_ends() -> None:
    health = UpstreamHealth(ejection=15.0)
    assert health.connect_failed(OLD_A, 100.0, slow=True) is True
    assert sorted(health.candidates([OLD_A, OLD_B, NEW], 3, 101.0)) == [OLD_B, NEW]
    assert health.ejected(101.0) == [OLD_A]
    assert sorted(health.candidates([OLD_A, OLD_B, NEW], 3, 115.0)) == [OLD_A, OLD_B, NEW]
    assert health.ejected(115.0) == []


def test_every_candidate_ejected_means_refuse_at_once() -> None:
    health = UpstreamHealth(ejection=15.0)
    health.connect_failed(OLD_A, 100.0, slow=True)
    health.connect_failed(OLD_B, 105.0, slow=True)
    assert health.candidates([OLD_A, OLD_B], 3, 110.0) == []
    # New addresses in the route (the replicated states caught up) are tried.
    assert health.candidates([OLD_A, OLD_B, NEW], 3, 110.0) == [NEW]


def test_a_successful_connect_clears_the_mark_and_zero_ejection_disables_it() -> None:
    health = UpstreamHealth(ejection=15.0)
    health.connect_failed(OLD_A, 100.0, slow=True)
    health.connected(OLD_A)
    assert health.candidates([OLD_A], 3, 100.5) == [OLD_A]
    never = UpstreamHealth(ejection=0.0)
    assert never.connect_failed(OLD_A, 100.0, slow=True) is False
    assert never.candidates([OLD_A], 3, 100.0) == [OLD_A]


def test_candidates_are_capped_and_shuffled() -> None:
    health = UpstreamHealth(ejection=15.0)
    many = [Upstream(f"10.0.0.{i}", 8443) for i in range(1, 9)]
    seen = {tuple(health.candidates(many, 3, 0.0)) for _ in range(50)}
    assert all(len(order) == 3 for order in seen)
    assert len(seen) > 1


def test_negative_ejection_is_refused() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        UpstreamHealth(ejection=-1.0)
