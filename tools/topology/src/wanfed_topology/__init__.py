"""wanfed_topology: multi-datacenter wanfed topologies in network namespaces.

Describe datacenters as data (:class:`Topology`), :func:`build` the namespaces
and the firewall that lets only gateways cross, run processes inside with a
:class:`Supervisor`, and :func:`teardown` everything.
"""

from ._federation import (
    GATEWAY_PORT,
    HTTP_PORT,
    gateway_argv,
    make_certificates,
    server_config,
    start_federation,
    start_gateway,
    wanfed_executable,
    write_config,
    write_primary_gateways,
)
from ._netns import (
    PREFIX_ENV,
    Leftovers,
    NetnsError,
    add_hosts,
    build,
    check_prerequisites,
    cut_wan,
    heal_wan,
    leftovers,
    nft_ruleset,
    reap_stale,
    remove_datacenter,
    remove_hosts,
    replace_gateways,
    reset_connections,
    teardown,
)
from ._plan import (
    WAN_GATEWAY,
    WAN_NETWORK,
    DatacenterSpec,
    Host,
    Topology,
    default_prefix,
    owner_pid,
)
from ._probe import http_json, run_in, wait_until, wanfed_cli
from ._processes import Process, Supervisor

__all__ = [
    "GATEWAY_PORT",
    "HTTP_PORT",
    "PREFIX_ENV",
    "WAN_GATEWAY",
    "WAN_NETWORK",
    "DatacenterSpec",
    "Host",
    "Leftovers",
    "NetnsError",
    "Process",
    "Supervisor",
    "Topology",
    "add_hosts",
    "build",
    "check_prerequisites",
    "cut_wan",
    "default_prefix",
    "gateway_argv",
    "heal_wan",
    "http_json",
    "leftovers",
    "make_certificates",
    "nft_ruleset",
    "owner_pid",
    "reap_stale",
    "remove_datacenter",
    "remove_hosts",
    "replace_gateways",
    "reset_connections",
    "run_in",
    "server_config",
    "start_federation",
    "start_gateway",
    "teardown",
    "wait_until",
    "wanfed_cli",
    "wanfed_executable",
    "write_config",
    "write_primary_gateways",
]
