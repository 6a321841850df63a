"""The curated mutations: one guard each, the behaviour it protects, and its killers.

Each entry is an exact edit: ``original`` must occur exactly once in ``file``
(repository-relative) and is replaced by ``replacement``. ``tests`` are pytest
node ids, run on the mutated copy only; at least one must fail. Keep each
edit the smallest one that removes the guard, and name the fewest, fastest
tests that notice: the whole list runs in CI.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MUTATIONS", "Mutation"]


@dataclass(frozen=True)
class Mutation:
    name: str
    """Short, unique; also the folder of the mutated copy."""
    behaviour: str
    """What breaks when the guard is gone, in operator's words."""
    file: str
    original: str
    replacement: str
    tests: tuple[str, ...]
    note: str = ""
    """Why an entry has no test yet (reported; such an entry fails the run)."""


_SERVER = "services/server/src/wanfed_server/runtime"
_SERVER_TESTS = "services/server/tests"
_LOCATOR = "packages/wanfed-gateway-locator/src/wanfed_gateway_locator"
_LOCATOR_TESTS = "packages/wanfed-gateway-locator/tests"
_REPLICATION = "packages/wanfed-replication/src/wanfed_replication"
_REPLICATION_TESTS = "packages/wanfed-replication/tests"
_FSM = "packages/wanfed-fsm/src/wanfed_fsm"

_AGENT_RPC = "packages/wanfed-agent/src/wanfed_agent/rpc"
_AGENT_TESTS = "packages/wanfed-agent/tests"

MUTATIONS: tuple[Mutation, ...] = (
    Mutation(
        name="keepalive-never-declares-dead",
        behaviour=(
            "a pooled RPC connection whose path died silently is never given up: its calls "
            "(a replication long-poll) wait out their whole deadline and no failure reaches "
            "the gateway locator"
        ),
        file=f"{_AGENT_RPC}/_keepalive.py",
        original="        if now >= dead_at:\n",
        replacement="        if False:\n",
        tests=(
            f"{_AGENT_TESTS}/test_rpc_keepalive.py"
            "::test_calls_on_a_connection_gone_silent_fail_promptly",
        ),
    ),
    Mutation(
        name="raft-link-servers-only-removed",
        behaviour=(
            "any holder of a same-CA client certificate (or another datacenter's server "
            "certificate) reaches the Raft link, whose decoder is pickle.loads (remote code "
            "execution)"
        ),
        file=f"{_SERVER}/_rpc_port.py",
        original=(
            'alpn[Alpn.RAFT] = policy.guard(raft.serve, what="raft", datacenter=config.datacenter)'
        ),
        replacement="alpn[Alpn.RAFT] = raft.serve",
        tests=(
            f"{_SERVER_TESTS}/test_runtime_doors.py"
            "::test_the_raft_link_refuses_a_non_server_before_any_byte_is_decoded",
        ),
    ),
    Mutation(
        name="reads-not-forwarded",
        behaviour=(
            "a follower answers a default-consistency read from its own store, which may "
            "be behind the leader (only writes reach the leader)"
        ),
        file=f"{_SERVER}/_forward.py",
        original=(
            "needs_leader = endpoint.kind is EndpointKind.WRITE or (\n"
            "            endpoint.kind is EndpointKind.READ"
            " and not endpoint.allows_stale(request)\n"
            "        )"
        ),
        replacement="needs_leader = endpoint.kind is EndpointKind.WRITE",
        tests=(
            f"{_SERVER_TESTS}/test_dispatch_routing.py"
            "::test_a_follower_sends_a_default_read_to_the_leader",
        ),
    ),
    Mutation(
        name="local-probe-always-succeeds",
        behaviour=(
            "the probe of the local path reports success without dialling, so a leader "
            "whose local gateways are black-holed flaps back onto them"
        ),
        file=f"{_SERVER}/_wanfed.py",
        original=(
            "    async def probe(self, gateway: str) -> None:\n        await self._client.probe("
        ),
        replacement=(
            "    async def probe(self, gateway: str) -> None:\n"
            "        return\n"
            "        await self._client.probe("
        ),
        tests=(
            f"{_SERVER_TESTS}/test_local_path_probe.py"
            "::test_a_black_holed_local_gateway_keeps_the_leader_direct",
        ),
    ),
    Mutation(
        name="probe-outcome-ignored",
        behaviour=(
            "the locator service records every probe of the local path as a success, "
            "whatever the probe raised"
        ),
        file=f"{_LOCATOR}/_service.py",
        original="self.locator.record_local_probe_result(error, self._clock())",
        replacement="self.locator.record_local_probe_result(None, self._clock())",
        tests=(
            f"{_LOCATOR_TESTS}/test_service.py"
            "::test_probe_task_runs_only_while_direct_and_switches_back_when_it_works",
        ),
    ),
    Mutation(
        name="failed-probe-switches-back",
        behaviour="the locator core leaves the direct path on a failed probe as on a working one",
        file=f"{_LOCATOR}/_locator.py",
        original=(
            "        if error is None:\n"
            "            self._direct = False\n"
            "            # Three fresh failures"
        ),
        replacement=(
            "        if True:\n            self._direct = False\n            # Three fresh failures"
        ),
        tests=(
            f"{_LOCATOR_TESTS}/test_locator.py"
            "::test_probes_are_due_every_interval_after_going_direct",
        ),
    ),
    Mutation(
        name="blocking-queries-never-woken",
        behaviour=(
            "a blocking query is not woken by the write it waits for; it answers only "
            "when its wait runs out"
        ),
        file=f"{_FSM}/_blocking.py",
        original="loop.call_soon_threadsafe(_resolve, woken, abandoned)",
        replacement="pass",
        tests=(
            f"{_SERVER_TESTS}/test_runtime_endpoints.py"
            "::test_blocking_query_waits_until_a_write_and_times_out_unchanged",
        ),
    ),
    Mutation(
        name="failed-datacenters-pruned",
        behaviour=(
            "the primary deletes the federation state of a datacenter whose servers are "
            "only failed (a partition), not gone: when the partition heals it has no path"
        ),
        file=f"{_SERVER}/_wan.py",
        original="and member.state is not MemberState.LEFT\n",
        replacement="and member.state in (MemberState.ALIVE, MemberState.SUSPECT)\n",
        tests=(
            f"{_SERVER_TESTS}/test_pruning_registry.py"
            "::test_a_datacenter_whose_servers_failed_is_kept",
        ),
    ),
    Mutation(
        name="unreaped-datacenters-pruned",
        behaviour=(
            "a datacenter partitioned for longer than gossip_to_the_dead_time (its dead "
            "servers forgotten by gossip, not yet reaped) loses its federation state"
        ),
        file=f"{_SERVER}/_wan.py",
        original="kept.add(split_node_name(name)[1].lower())",
        replacement="pass",
        tests=(
            f"{_SERVER_TESTS}/test_pruning_registry.py"
            "::test_a_datacenter_still_being_reconnected_to_is_kept",
        ),
    ),
    Mutation(
        name="pruning-asks-the-router",
        behaviour=(
            "the primary's pruner keeps only datacenters with a live server (what routing "
            "needs) instead of every datacenter not left or reaped: a partition prunes"
        ),
        file=f"{_SERVER}/_federation_host.py",
        original=(
            "        if wan is not None and not self._router_injected:\n"
            "            return wan.known_datacenters()\n"
            "        return self._router().datacenters()"
        ),
        replacement="        return self._router().datacenters()",
        tests=(
            f"{_SERVER_TESTS}/test_federation_inprocess.py"
            "::test_a_datacenter_whose_servers_failed_is_not_pruned",
        ),
    ),
    Mutation(
        name="followers-go-direct",
        behaviour=(
            "a follower, which runs no replication and so has no signal to judge the "
            "path by, dials the primary's gateways directly instead of its local ones"
        ),
        file=f"{_LOCATOR}/_locator.py",
        original=(
            "        if not self._use_replication_signal:\n"
            "            return True\n"
            "        if self._last_success is None"
        ),
        replacement="        if self._last_success is None",
        tests=(
            f"{_LOCATOR_TESTS}/test_locator.py"
            "::test_a_follower_trusts_local_gateways_before_any_replication_result",
        ),
    ),
    Mutation(
        name="fallback-gateways-dropped",
        behaviour=(
            "the direct path uses only the replicated primary gateways, not their union "
            "with primary_gateways: a secondary whose replicated list went stale is stranded"
        ),
        file=f"{_LOCATOR}/_locator.py",
        original="merged = merge_sorted_unique(self._primary, self._fallback)",
        replacement="merged = list(self._primary)",
        tests=(
            f"{_LOCATOR_TESTS}/test_locator.py"
            "::test_secondary_with_data_and_fallback_no_replication",
        ),
    ),
    Mutation(
        name="anti-entropy-debounce-removed",
        behaviour="a flapping gateway check turns into a stream of federation-state writes",
        file=f"{_REPLICATION}/_anti_entropy_core.py",
        original="if self._last_sync is not None and not restores_a_path(view.stored, state):",
        replacement="if False:",
        tests=(
            f"{_REPLICATION_TESTS}/test_anti_entropy_core.py"
            "::test_a_flapping_gateway_costs_at_most_one_write_per_interval",
            f"{_REPLICATION_TESTS}/test_federation_replication.py"
            "::test_anti_entropy_writes_only_on_change_and_debounces",
        ),
    ),
    Mutation(
        name="reserved-catalog-entries-open",
        behaviour=(
            "anyone who reaches the HTTP API or holds a client certificate registers a fake "
            "consul service or writes a live server's node"
        ),
        file=f"{_SERVER}/_endpoints_catalog.py",
        original="authorize=reserved.register,",
        replacement="authorize=lambda _caller, _request: None,",
        tests=(
            f"{_SERVER_TESTS}/test_runtime_reserved_catalog.py"
            "::test_a_fake_consul_service_is_refused_over_http",
        ),
    ),
    Mutation(
        name="node-claims-unchecked",
        behaviour=(
            "a server certificate of node X says hello or joins Raft as node Y and overwrites "
            "Y's server directory entry"
        ),
        file=f"{_SERVER}/_endpoints_status.py",
        original="datacenters=(datacenter,), node=server.node)",
        replacement="datacenters=(datacenter,), node=None)",
        tests=(
            f"{_SERVER_TESTS}/test_runtime_doors.py"
            "::test_a_server_certificate_cannot_claim_another_node",
        ),
    ),
    Mutation(
        name="gossip-alpn-servers-only-removed",
        behaviour=(
            "a client certificate sends WAN gossip packets through a gateway and adds "
            "members (fake datacenters) to the WAN pool"
        ),
        file="packages/wanfed-agent/src/wanfed_agent/gateway_transport/_transport.py",
        original=(
            "self.serve_packets: ConnectionHandler = self._policy.guard(\n"
            '            self._serve_packets, what="wan gossip packet"\n'
            "        )"
        ),
        replacement="self.serve_packets: ConnectionHandler = self._serve_packets",
        tests=(
            "packages/wanfed-agent/tests/test_gateway_transport.py"
            "::test_a_client_certificate_cannot_gossip_over_the_gateway_alpns",
        ),
    ),
    Mutation(
        name="plain-rpc-beside-tls",
        behaviour=(
            "a TLS server with verify_incoming off serves plain type-byte RPC: anyone on the "
            "network calls every method without a certificate"
        ),
        file=f"{_SERVER}/_rpc_port.py",
        original="return config.dev_mode and tls is None",
        replacement="return config.dev_mode or not config.tls.defaults.verify_incoming",
        tests=(
            f"{_SERVER_TESTS}/test_runtime_doors.py"
            "::test_plain_rpc_is_refused_by_a_tls_server_even_with_verify_incoming_off",
        ),
    ),
    Mutation(
        name="per-client-connection-cap-removed",
        behaviour=(
            "one client holds as many RPC connections as it likes and exhausts the server's "
            "file descriptors"
        ),
        file="packages/wanfed-proto/src/wanfed_proto/_limits.py",
        original="if self._per_client and current >= self._per_client:",
        replacement="if False:",
        tests=(
            "packages/wanfed-proto/tests/test_listener_limits.py"
            "::test_a_client_over_its_cap_is_refused_and_others_are_not",
        ),
    ),
    Mutation(
        name="http-header-deadline-removed",
        behaviour="a slowloris client holds an HTTP connection forever, one header byte at a time",
        file="services/server/src/wanfed_server/http/_guard.py",
        original="if self._header_timer is None and self._no_request_open():",
        replacement="if False:",
        tests=(
            f"{_SERVER_TESTS}/test_http_limits.py"
            "::test_slowloris_headers_are_cut_at_the_header_deadline",
        ),
    ),
    Mutation(
        name="json-depth-cap-removed",
        behaviour="a deeply nested JSON body reaches the handlers (500 with a traceback)",
        file="services/server/src/wanfed_server/http/_body.py",
        original="if depth is None or depth > MAX_JSON_DEPTH:",
        replacement="if depth is None:",
        tests=(
            f"{_SERVER_TESTS}/test_http_nested_json.py"
            "::test_deep_body_is_a_400_and_the_server_stays_writable",
        ),
    ),
    Mutation(
        name="snapshot-consistency-unchecked",
        behaviour=(
            "a snapshot no store could hold (a service of an unknown node) is restored, and "
            "the next snapshot of that store fails"
        ),
        file=f"{_FSM}/_store.py",
        original="    problem = _inconsistency(contents)\n",
        replacement="    problem = ''\n",
        tests=(
            "packages/wanfed-fsm/tests/test_properties_snapshots.py"
            "::test_snapshots_no_store_could_hold_are_refused",
        ),
    ),
    Mutation(
        name="unsealed-gossip-accepted",
        behaviour=(
            "one unencrypted UDP gossip packet adds a member of a made-up datacenter to the "
            "WAN pool and to /v1/catalog/datacenters"
        ),
        file="packages/wanfed-agent/src/wanfed_agent/gossip/_membership.py",
        original="messages = decode_packet(data, self._keyring)",
        replacement="messages = decode_packet(data, self._keyring, require_encryption=False)",
        tests=(
            f"{_SERVER_TESTS}/test_gossip_doors.py"
            "::test_gossip_without_the_key_adds_no_member_and_no_datacenter",
        ),
    ),
    Mutation(
        name="gossip-key-optional",
        behaviour="a server outside -dev starts without a gossip key, its WAN port open to forgery",
        file="packages/wanfed-agent/src/wanfed_agent/config/_validate.py",
        original="if c.server and not c.dev_mode and c.encrypt is None:",
        replacement="if False:",
        tests=(
            "packages/wanfed-agent/tests/test_config_validation.py"
            "::test_server_refuses_to_start_without_a_gossip_key",
        ),
    ),
    Mutation(
        name="lzw-ratio-cap-removed",
        behaviour=(
            "a small compressed gossip message expands to the size cap (a decompression bomb "
            "costs memory and CPU per packet)"
        ),
        file="packages/wanfed-agent/src/wanfed_agent/gossip/_lzw.py",
        original="limit = min(max_output, len(data) * max_ratio)",
        replacement="limit = max_output",
        tests=(
            "packages/wanfed-agent/tests/test_gossip_limits.py"
            "::test_a_small_bomb_is_refused_by_ratio_below_the_size_cap",
        ),
    ),
)
