"""Worker-side toolchain (``vllm-cpu-build``) and the thin Buildbot steps over it."""
