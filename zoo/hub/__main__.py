"""`python -m zoo.hub mirror|revision ...` (see zoo.hub.mirror)."""

from zoo.hub.mirror import main

raise SystemExit(main())
