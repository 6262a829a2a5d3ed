# NPA Bench. Set-up is part of every target: system packages (apt) and a
# virtualenv with pinned dependencies are installed on first use.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TOPOLOGY ?= topologies/emulated-lab.yaml
REPORT ?= report
APT_PACKAGES := openssh-server openssh-client iproute2 iputils-ping tcpdump procps python3-venv ethtool chromium
LINTED := bench drivers nic_emulators tests conftest.py

.PHONY: setup system qemu qemu-sriov-image qemu-sriov-hv-image qemu-failover-image run test test-vfio-lab bench lint clean

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

## qemu: QEMU >= 10 (its igb model has SR-IOV), from bookworm-backports when missing.
# The suite is added on the mirror the machine already uses for Debian.
QEMU_SOURCES := /etc/apt/sources.list.d/npabench-bookworm-backports.sources
qemu: system
	@major=$$(qemu-system-x86_64 --version 2>/dev/null \
	    | sed -n '1s/.*version \([0-9]*\).*/\1/p' || true); \
	if [ "$${major:-0}" -lt 10 ]; then \
	  mirror=$$(grep -hoE 'https?://deb\.debian\.org/debian/?( |$$)' \
	    /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null | head -n1 | tr -d ' ' \
	    || true); \
	  mirror=$${mirror:-http://deb.debian.org/debian}; \
	  printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: %s\n' \
	    "$$mirror" /usr/share/keyrings/debian-archive-keyring.gpg > $(QEMU_SOURCES); \
	  echo "make: installing qemu-system-x86 from bookworm-backports ($$mirror)"; \
	  apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    -t bookworm-backports qemu-system-x86; \
	fi

## qemu-sriov-image: the igb lab host's kernel + initramfs under build/ (rebuilt when inputs change)
QEMU_IMAGE_DIR := build/qemu-sriov-host
qemu-sriov-image: qemu $(BIN)/.installed
	$(BIN)/python -m bench.qemu.sriov_host_image $(QEMU_IMAGE_DIR)

## qemu-sriov-hv-image: the igb host with hypervisor tools (QEMU, python3, bridge) for nested guests
QEMU_HV_IMAGE_DIR := build/qemu-sriov-hv
qemu-sriov-hv-image: qemu $(BIN)/.installed
	$(BIN)/python -m bench.qemu.sriov_host_image --hv $(QEMU_HV_IMAGE_DIR)

## qemu-failover-image: the failover guests' kernel + initramfs (net_failover, virtio, vmxnet3, e1000e, igbvf)
QEMU_FAILOVER_DIR := build/qemu-failover-guest
qemu-failover-image: qemu $(BIN)/.installed
	$(BIN)/python -m bench.qemu.failover_image $(QEMU_FAILOVER_DIR)

$(BIN)/.installed: pyproject.toml requirements.lock | system
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

## run: bring the default lab up, run the conformance suite, write the report, tear down
run: setup qemu-sriov-image
	@status=0; $(BIN)/npabench run $(TOPOLOGY) --report $(REPORT) || status=$$?; \
	echo "HTML report: $(abspath $(REPORT))/report.html"; exit $$status

## test: lint, type-check, then the project's tests (real namespaces, sshd, sockets)
test: setup lint qemu-sriov-image qemu-failover-image
	$(BIN)/pytest tests --topology $(TOPOLOGY)

## test-vfio-lab: a QEMU failover guest whose primary is a real VF (vfio-pci) of the igb
## host, nested under TCG (about 8 minutes; not part of `test`)
test-vfio-lab: setup qemu-sriov-hv-image qemu-failover-image
	NPABENCH_VFIO_LAB=1 $(BIN)/pytest tests/sriov/test_vfio_failover_guest.py

lint: setup
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy bench drivers nic_emulators

## bench: measure (SSH, fan-out, lab up/down, traffic, data path, live migration); writes bench-results.json
bench: setup
	$(BIN)/python -m tests.benchmarks

clean:
	-[ -x $(BIN)/npabench ] && $(BIN)/npabench cleanup
	rm -rf $(VENV) $(REPORT) bench-results.json .mypy_cache .ruff_cache .pytest_cache *.egg-info
