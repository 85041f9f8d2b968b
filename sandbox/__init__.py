"""The local sandbox behind ``make run`` and the end-to-end tests (not shipped)."""

from sandbox.core import Sandbox

__all__ = ["Sandbox"]
