"""Buildbot step classes (master side; never shipped to workers).

``toolchain``: thin wrappers that run ``vllm-cpu-build`` on a worker.
``release``: the release and re-check builders' own steps (no worker command).
``publish``: after a release's uploads (or a late variant build's): the GitHub release.
``images``: which packages get an image, and the ``images`` builder's steps.
"""
