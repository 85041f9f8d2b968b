"""Buildbot master wiring: settings, workers, builders, schedulers, www.

``master.cfg`` is a table of contents over these modules; every module is
small and importable without a running master so it can be unit-tested.
"""
