"""wanfed_topology: multi-datacenter wanfed topologies in network namespaces.

Describe datacenters as data (:class:`Topology`), :func:`build` the namespaces
and the firewall that lets only gateways cross, run processes inside with a
:class:`Supervisor`, and :func:`teardown` everything.
"""

from ._netns import NetnsError, build, check_prerequisites, nft_ruleset, teardown
from ._plan import WAN_GATEWAY, WAN_NETWORK, DatacenterSpec, Host, Topology, default_prefix
from ._processes import Process, Supervisor

__all__ = [
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
    "nft_ruleset",
    "teardown",
]
