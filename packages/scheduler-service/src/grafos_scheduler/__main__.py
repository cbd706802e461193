"""``python -m grafos_scheduler``: the same as the ``grafos-scheduler`` command."""

from ._cli._main import main

raise SystemExit(main())
