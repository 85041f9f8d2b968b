"""Local stand-ins and fixtures shared by the sandbox and the tests (never shipped).

``fixture_upstream`` (a small vLLM-shaped git upstream), ``github_server`` (the
documented GitHub endpoints the release step uses), ``aarch64_host`` (an
emulated Debian arm64 build host), ``debroot`` (cached mmdebstrap roots) and
``cpuinfo/`` (real machines' /proc/cpuinfo and macOS sysctl output: the
emulated Graviton2's, provision.sh's CPU check, the detector's tests).
"""
