"""Allows `python -m daemon ...` as well as the `stylebox` console script."""

from daemon.cli import main

raise SystemExit(main())
