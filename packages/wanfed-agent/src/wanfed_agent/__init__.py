"""wanfed agent."""

__all__: list[str] = []
