# Quick start: `make run` (local sandbox) and `make test` (whole suite).
# Each sets up what it needs, and only that: Debian packages (once), then .venv.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# Debian packages, per use.
# The sandbox (`make run`): git, the real compiler (ccache makes rebuilds cheap),
# cmake, patchelf for auditwheel, qemu-user-static for smoke's floor CPU
# (vllm_cpu_build/floor.py: the probe again on an emulated Haswell / Neoverse-N1).
APT_RUN  := git cmake gcc g++ ccache patchelf qemu-user-static
# `make run ARM64=1 / IMAGES=1 / FULL=1`: qemu-user-static + mmdebstrap for the
# emulated aarch64 build host of testbed/aarch64_host.py, buildah +
# docker-registry + skopeo for the runtime images and a real OCI registry.
APT_FULL := qemu-user-static binfmt-support mmdebstrap arch-test buildah docker-registry skopeo
# The tests besides: the cross toolchain for aarch64 ISA audits, chromium for
# the web UI tests, ngircd as a real IRC server, postgresql for the production
# test's database, systemd for `systemd-analyze verify` of the service units,
# libnuma-dev for the real vLLM build of tests/real/test_real_upstream.py,
# bubblewrap for build roots, redis-server as the farm's shared compile cache
# (ccache remote storage; `make run` starts one only when it is installed).
APT_TEST := binutils-aarch64-linux-gnu gcc-aarch64-linux-gnu chromium ngircd postgresql systemd \
            libnuma-dev bubblewrap redis-server
APT_STAMP      := $(VENV)/.apt-done
APT_RUN_STAMP  := $(VENV)/.apt-run-done
APT_FULL_STAMP := $(VENV)/.apt-full-done
PIP_STAMP      := $(VENV)/.pip-done
PIP_RUN_STAMP  := $(VENV)/.pip-run-done
# The WAMP router of Buildbot's multi-master mode (master/README.md, the
# multi-master test) lives in a venv of its own: crossbar pins idna<2.6,
# which the project's venv must not be downgraded to.  Only the multi-master
# test (and production scale-out) uses it: `make test` and that test's
# fixture create it, `make run` never does.
CROSSBAR_VENV  := .venv-crossbar
CROSSBAR_STAMP := $(CROSSBAR_VENV)/.pip-done
CROSSBAR_REQS  := master/crossbar-requirements.txt
# mypy --strict on these ([tool.mypy] in pyproject.toml).
TYPED  := vllm_cpu_build steps
FULL_RUN := $(or $(ARM64),$(IMAGES),$(FULL))

.PHONY: setup setup-run crossbar run test test-unit test-e2e test-real check check-unit lint lint-ruff \
        lint-mypy bench clean help
help:
	@echo "make run        - start the local sandbox (ONCE=1: release once and exit;"
	@echo "                  ARM64=1: emulated arm64 worker too; IMAGES=1: local registries + images;"
	@echo "                  GITHUB=1: a local GitHub stand-in gets the release; FULL=1: all three)"
	@echo "make check      - while iterating: ruff, mypy and the unit tier but its slow tests"
	@echo "make lint       - ruff and mypy --strict ($(TYPED))"
	@echo "make test       - set up and run everything (lint + every tier): what CI runs"
	@echo "make test-unit / test-e2e / test-real - one tier (PYTEST_ARGS: more pytest options)"
	@echo "make bench      - side-by-side measurements (orchestration, ccache, compiles per release,"
	@echo "                  REST under a flood; BENCH_ARGS='--only flood': one of them)"

# apt_install LIST: install the Debian packages of LIST that are missing (sudo unless root).
define apt_install
missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
if [ -n "$$missing" ]; then \
  echo "installing Debian packages: $$missing"; \
  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
  $$SUDO apt-get update -qq && \
  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
fi
endef

$(APT_STAMP): Makefile
	@mkdir -p $(VENV)
	@$(call apt_install,$(APT_RUN) $(APT_FULL) $(APT_TEST))
	@touch $(APT_RUN_STAMP) $(APT_FULL_STAMP) $@

# The sandbox's sets; a complete setup (.apt-done) has them already.
$(APT_RUN_STAMP): Makefile
	@mkdir -p $(VENV)
	@if [ ! $(APT_STAMP) -nt Makefile ]; then $(call apt_install,$(APT_RUN)); fi
	@touch $@

$(APT_FULL_STAMP): Makefile
	@mkdir -p $(VENV)
	@if [ ! $(APT_STAMP) -nt Makefile ]; then $(call apt_install,$(APT_FULL)); fi
	@touch $@

$(PY):
	$(PYTHON) -m venv $(VENV)

# The sandbox's Python packages: pyproject.toml's [sandbox] extra (master + toolchain + index)
# and vllm-cpu-detect (detector/, a package of its own: the runtime images install it too).
$(PIP_RUN_STAMP): pyproject.toml detector/pyproject.toml | $(PY)
	@if [ ! $(PIP_STAMP) -nt pyproject.toml ]; then \
	  $(PY) -m pip install -q --upgrade pip && $(PY) -m pip install -q -e '.[sandbox]' -e ./detector; fi
	@touch $@

# Everything the tests need: the [test] extra (sandbox + pytest, ruff, mypy, playwright ...)
# and vllm-cpu-detect.
$(PIP_STAMP): pyproject.toml detector/pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]' -e ./detector
	@touch $(PIP_RUN_STAMP) $@

$(CROSSBAR_STAMP): $(CROSSBAR_REQS)
	$(PYTHON) -m venv $(CROSSBAR_VENV)
	$(CROSSBAR_VENV)/bin/pip install -q -r $(CROSSBAR_REQS)
	@touch $@

crossbar: $(CROSSBAR_STAMP)
setup: $(APT_STAMP) $(PIP_STAMP)
setup-run: $(APT_RUN_STAMP) $(if $(FULL_RUN),$(APT_FULL_STAMP)) $(PIP_RUN_STAMP)

lint: setup
	$(MAKE) --no-print-directory lint-ruff lint-mypy

lint-ruff:
	$(VENV)/bin/ruff check .

lint-mypy:
	$(VENV)/bin/mypy

# ruff, mypy and the unit tier without its `slow` tests (the fixture's five
# variants compiled and smoke-tested: `make test-unit` and `make test` run
# those too); mypy runs beside the tests, all three run and print whole.
check: setup
	@$(MAKE) --no-print-directory -k -j2 --output-sync=target lint-ruff lint-mypy check-unit

check-unit:
	$(PY) -m pytest tests/unit -m "not slow" $(PYTEST_ARGS)

test: setup crossbar lint
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: setup
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-e2e: setup crossbar
	$(PY) -m pytest tests/e2e $(PYTEST_ARGS)

test-real: setup
	$(PY) -m pytest tests/real $(PYTEST_ARGS)

# Not part of `make test`: measurements, printed side by side with ratios (~10 min).
bench: setup
	$(PY) -m tests.bench $(BENCH_ARGS)

run: setup-run
	$(PY) -m sandbox $(if $(ONCE),--once,) $(if $(or $(ARM64),$(FULL)),--arm64,) \
	  $(if $(or $(IMAGES),$(FULL)),--images,) $(if $(or $(GITHUB),$(FULL)),--github,)

clean:
	rm -rf $(VENV) $(CROSSBAR_VENV) .sandbox .pytest_cache .mypy_cache
