"""Build and smoke-test wanfed's server container image with podman.

``python -m tools.container build`` makes the image offline-capable: a cached
debootstrap base, wheels prepared on the host, podman confined to a private
storage root and never on its default bridge network.
"""

from ._base_image import DebootstrapRecipe, apt_mirror, ensure_base_image
from ._build import (
    OFFICIAL_BASE,
    BuildPlan,
    Leftovers,
    build_image,
    default_home,
    leftovers,
    remove_all_but_cache,
)
from ._engine import (
    ContainerError,
    ContainerHome,
    Podman,
    RunSpec,
    check_network_mode,
    check_podman_args,
)

__all__ = [
    "OFFICIAL_BASE",
    "BuildPlan",
    "ContainerError",
    "ContainerHome",
    "DebootstrapRecipe",
    "Leftovers",
    "Podman",
    "RunSpec",
    "apt_mirror",
    "build_image",
    "check_network_mode",
    "check_podman_args",
    "default_home",
    "ensure_base_image",
    "leftovers",
    "remove_all_but_cache",
]
