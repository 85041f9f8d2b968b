"""``python -m sandbox`` (what ``make run`` runs)."""

import sys

from sandbox.core import main

sys.exit(main())
