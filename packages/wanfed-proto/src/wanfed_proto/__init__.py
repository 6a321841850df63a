"""wanfed proto."""

__all__: list[str] = []
