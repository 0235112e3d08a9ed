"""``python -m trio_isyswasfa``: see :mod:`trio_isyswasfa._cli`."""

from ._cli import main

raise SystemExit(main())
