"""`python -m xarch ...`: the same as `xrun ...` (the exec wrappers use it: no PATH lookup)."""

from .cli import main

raise SystemExit(main())
