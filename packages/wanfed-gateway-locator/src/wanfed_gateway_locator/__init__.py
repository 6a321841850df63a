"""wanfed gateway_locator."""

__all__: list[str] = []
