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
    wanfed_executable,
    write_config,
)
from ._netns import NetnsError, build, check_prerequisites, nft_ruleset, teardown
from ._plan import WAN_GATEWAY, WAN_NETWORK, DatacenterSpec, Host, Topology, default_prefix
from ._processes import Process, Supervisor

__all__ = [
    "GATEWAY_PORT",
    "HTTP_PORT",
    "WAN_GATEWAY",
    "WAN_NETWORK",
    "DatacenterSpec",
    "Host",
    "NetnsError",
    "Process",
    "Supervisor",
    "Topology",
    "build",
    "check_prerequisites",
    "default_prefix",
    "gateway_argv",
    "make_certificates",
    "nft_ruleset",
    "server_config",
    "start_federation",
    "teardown",
    "wanfed_executable",
    "write_config",
]
