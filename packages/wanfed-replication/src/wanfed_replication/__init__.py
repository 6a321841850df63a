"""wanfed replication."""

__all__: list[str] = []
