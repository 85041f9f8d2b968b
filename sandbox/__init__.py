"""The local sandbox behind ``make run`` and the end-to-end tests (not shipped).

``core.Sandbox`` puts together ``http.Client`` (the REST client of its
master), ``settings`` (its settings file, through ``farm.settings``) and
``procs`` (its child processes); ``cli`` is ``make run``, ``watch`` what it
prints after "serving".
"""

from sandbox.core import Sandbox

__all__ = ["Sandbox"]
