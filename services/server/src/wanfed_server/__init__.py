"""The wanfed server: the composition root that wires every layer together."""

__all__: list[str] = []
