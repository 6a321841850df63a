"""wanfed fsm."""

__all__: list[str] = []
