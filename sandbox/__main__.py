"""``python -m sandbox`` (what ``make run`` runs)."""

import sys

from sandbox.cli import main

sys.exit(main())
