# Quick start: `make run` (local sandbox) and `make test` (whole suite).
# Both set up what they need: Debian packages (once), then .venv.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# Debian packages the tests and the sandbox need (real compiler, cross
# toolchain for aarch64 ISA audits, patchelf for auditwheel, chromium for
# the web UI test, ngircd as a real IRC server, qemu-user-static + mmdebstrap
# for the emulated aarch64 build host of testbed/aarch64_host.py, postgresql
# for the production test's database, systemd for `systemd-analyze verify`
# of the service units, buildah + docker-registry + skopeo for the runtime
# images and a real OCI registry, libnuma-dev for the real vLLM build of
# tests/real/test_real_upstream.py, bubblewrap for build roots).
APT_PACKAGES := git cmake gcc g++ ccache patchelf binutils-aarch64-linux-gnu \
                gcc-aarch64-linux-gnu chromium ngircd \
                qemu-user-static binfmt-support mmdebstrap arch-test \
                postgresql systemd buildah docker-registry skopeo \
                libnuma-dev bubblewrap
APT_STAMP := $(VENV)/.apt-done
PIP_STAMP := $(VENV)/.pip-done
# The WAMP router of Buildbot's multi-master mode (master/README.md, the
# multi-master test) lives in a venv of its own: crossbar pins idna<2.6,
# which the project's venv must not be downgraded to.
CROSSBAR_VENV  := .venv-crossbar
CROSSBAR_STAMP := $(CROSSBAR_VENV)/.pip-done
CROSSBAR_PIN   := crossbar==26.10.1

.PHONY: setup run test lint bench clean help
help:
	@echo "make run   - start the local sandbox (ONCE=1: release once and exit;"
	@echo "             ARM64=1: emulated arm64 worker too; IMAGES=1: local registries + images;"
	@echo "             GITHUB=1: a local GitHub stand-in gets the release; FULL=1: all three)"
	@echo "make test  - set up and run the whole test suite"
	@echo "make lint  - ruff"
	@echo "make bench - side-by-side measurements (orchestration, ccache, compiles per release)"

$(APT_STAMP): Makefile
	@mkdir -p $(VENV)
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@touch $@

$(PY):
	$(PYTHON) -m venv $(VENV)

$(PIP_STAMP): pyproject.toml detector/pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

$(CROSSBAR_STAMP):
	$(PYTHON) -m venv $(CROSSBAR_VENV)
	$(CROSSBAR_VENV)/bin/pip install -q '$(CROSSBAR_PIN)'
	@touch $@

setup: $(APT_STAMP) $(PIP_STAMP) $(CROSSBAR_STAMP)

lint: setup
	$(VENV)/bin/ruff check .

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# Not part of `make test`: measurements, printed side by side with ratios (~10 min).
bench: setup
	$(PY) -m tests.bench $(BENCH_ARGS)

run: setup
	$(PY) -m sandbox $(if $(ONCE),--once,) $(if $(or $(ARM64),$(FULL)),--arm64,) \
	  $(if $(or $(IMAGES),$(FULL)),--images,) $(if $(or $(GITHUB),$(FULL)),--github,)

clean:
	rm -rf $(VENV) $(CROSSBAR_VENV) .sandbox .pytest_cache
