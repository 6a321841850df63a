"""Primary-gateway discovery: literal addresses and ``provider=`` plugins."""

from ._discovery import FallbackSink, PrimaryGatewayDiscovery
from ._providers import (
    DISCOVERY_ENTRY_POINT_GROUP,
    DiscoveryError,
    DiscoveryProvider,
    DnsProvider,
    FileProvider,
    ProviderEntry,
    load_provider,
    parse_provider_entry,
)

__all__ = [
    "DISCOVERY_ENTRY_POINT_GROUP",
    "DiscoveryError",
    "DiscoveryProvider",
    "DnsProvider",
    "FallbackSink",
    "FileProvider",
    "PrimaryGatewayDiscovery",
    "ProviderEntry",
    "load_provider",
    "parse_provider_entry",
]
