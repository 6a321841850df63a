"""``python -m wanfed_sim``: the same as ``wanfed-sim``."""

from .cli import main

raise SystemExit(main())
