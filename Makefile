# NPA Bench. Set-up is part of every target: system packages (apt) and a
# virtualenv with pinned dependencies are installed on first use.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TOPOLOGY ?= topologies/emulated-lab.yaml
REPORT ?= report
APT_PACKAGES := openssh-server openssh-client iproute2 iputils-ping tcpdump procps python3-venv
LINTED := bench drivers nic_emulators tests conftest.py

.PHONY: setup system run test bench lint clean

setup: system $(BIN)/.installed

system:
	@missing=$$(for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q '^install ok installed$$' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
	  echo "make: installing system packages:" $$missing; \
	  apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(BIN)/.installed: pyproject.toml requirements.lock | system
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

## run: bring the default lab up, run the conformance suite, write the report, tear down
run: setup
	$(BIN)/npabench run $(TOPOLOGY) --report $(REPORT)

## test: lint, type-check, then the project's tests (real namespaces, sshd, sockets)
test: setup lint
	$(BIN)/pytest tests --topology $(TOPOLOGY)

lint: setup
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy bench drivers nic_emulators

## bench: measure (SSH, fan-out, lab up/down, traffic, data path); writes bench-results.json
bench: setup
	$(BIN)/python -m tests.benchmarks

clean:
	-[ -x $(BIN)/npabench ] && $(BIN)/npabench cleanup
	rm -rf $(VENV) $(REPORT) bench-results.json .mypy_cache .ruff_cache .pytest_cache *.egg-info
