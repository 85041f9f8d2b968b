"""The worker registry (``workers/registry.toml``) and its CLI (``python -m workers``)."""
