# Sluice — `make demo` and `make test` work on a fresh Debian machine (run as root).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
APT_PACKAGES := openvswitch-switch openvswitch-common containernetworking-plugins iproute2 \
	ethtool iptables iperf3 tcpdump procps util-linux iputils-ping curl
PYTEST_ARGS ?=

.PHONY: deps apt venv cni-shim lint typecheck test unit functional integration e2e demo bench clean

deps: apt venv

# why: dpkg -s is checked first so a machine that has everything never calls apt-get.
apt:
	@missing=""; for p in $(APT_PACKAGES); do \
		dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip >/dev/null
	$(VPY) -m pip install -q -e '.[dev]'
	touch $@

# The native CNI binary (cni/shim.c, docs/cni.md). Static when the C library allows it, so
# the same file runs on any Linux host; `python -m cni.install --native build/cni/sluice`
# installs it and falls back to the Python shim when it is missing or does not run.
SHIM_CFLAGS ?= -O2 -std=c11 -Wall -Wextra -Werror
build/cni/sluice: cni/shim.c
	@mkdir -p $(@D)
	$(CC) $(SHIM_CFLAGS) -static -o $@ $< 2>/dev/null || $(CC) $(SHIM_CFLAGS) -o $@ $<

cni-shim: build/cni/sluice

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy

unit: venv
	$(VPY) -m pytest -q tests/unit $(PYTEST_ARGS)

functional: deps
	$(VPY) -m pytest -q tests/functional $(PYTEST_ARGS)

integration: deps
	$(VPY) -m pytest -q tests/integration $(PYTEST_ARGS)

e2e: deps
	SLUICE_E2E=1 $(VPY) -m pytest -q -p no:cacheprovider tests/e2e $(PYTEST_ARGS)

# why: the e2e tier needs the sandbox's Kubernetes build (cached under
# /var/cache/sluice); it is part of `make test` so CI proves the whole path.
test: deps lint typecheck
	SLUICE_E2E=1 $(VPY) -m pytest -q -p no:cacheprovider tests $(PYTEST_ARGS)

demo: deps
	$(VPY) -m sandbox.demo

bench: deps
	$(VPY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
