"""``python -m vllm_cpu_build`` is ``vllm-cpu-build`` (how workers run the shipped toolchain)."""

import sys

from vllm_cpu_build.cli import main

sys.exit(main())
