"""``python -m steps`` is ``vllm-cpu-build`` (how workers run the shipped toolchain)."""

import sys

from steps.cli import main

sys.exit(main())
