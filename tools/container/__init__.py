"""Build and smoke-test wanfed's server container image with podman.

``python -m tools.container build`` makes the image offline-capable: a cached
debootstrap base, wheels prepared on the host, podman confined to a private
storage root and never on its default bridge network.
"""

from ._base_image import DebootstrapRecipe, apt_mirror, ensure_base_image
from ._engine import ContainerError, ContainerHome, Podman, RunSpec, check_network_mode

__all__ = [
    "ContainerError",
    "ContainerHome",
    "DebootstrapRecipe",
    "Podman",
    "RunSpec",
    "apt_mirror",
    "check_network_mode",
    "ensure_base_image",
]
