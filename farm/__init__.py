"""The release logic the master's modules and the Buildbot steps share (below ``steps/``, above the toolchain).

``names`` (builders, schedulers), ``settings`` (the TOML schema), ``inputs``
(the trusted property allowlist), ``states`` (result and state enums),
``decisions`` (the release builder's rules, pure functions), ``report``
(a release's builds and their table), ``published`` (the index view),
``logscan``, ``texts``, ``github_release``.
"""
