# OpenCBR — the two commands: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
# (setup.py and the C sources too: an install builds the optional C extension in place, src/**/*.so)
BUILT  := pyproject.toml constraints.txt setup.py src/opencbr/engine/tree/_listing.c src/opencbr/engine/tree/_reading.c
STAMP  := $(VENV)/.installed-$(shell cat $(BUILT) | sha1sum | cut -c1-12)

.PHONY: run test venv bytecode deps-test lock clean bench-disk bench-tree agent-package

# One line per step, so a first `make run` (about 90 s of installing) never looks stuck.
$(STAMP): $(BUILT)
	@echo "==> [1/3] creating the virtual environment $(VENV) (with $(PYTHON))"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "==> [2/3] updating pip, setuptools and wheel"
	@$(PIP) install -q --upgrade "pip>=24" "setuptools==80.9.0" "wheel==0.45.1"
	@echo "==> [3/3] installing OpenCBR and its pinned dependencies (constraints.txt; the longest step, about a minute)"
	@# no build isolation: step 2 put the build-system's pinned setuptools and wheel in the venv, and
	@# installing them again into a throw-away build environment cost ~7 s of every clean clone
	@$(PIP) install -q --no-build-isolation -c constraints.txt -e '.[test]'
	@rm -f $(VENV)/.installed-*; touch $(STAMP)
	@echo "==> installed"
	@$(MAKE) -s bytecode

venv: $(STAMP)

## make run: install, initialise the data directory, start the API + console + scheduler and the
## worker processes (setting `workers`). Ctrl-C stops it in order: running tasks are handed back.
run: venv bytecode
	@echo "==> starting OpenCBR (the first start creates $${OPENCBR_DATA_DIR:-./data}: catalog, master key, the admin's keys)"
	@$(VENV)/bin/opencbr serve

## Our modules compiled ahead (only what changed since the last time). An editable install leaves them
## as sources, and where PYTHONDONTWRITEBYTECODE is set every `cbr`, `opencbr` and worker start compiled
## them again (~0.1 s of CPU before the engine does anything); written ahead, they are read, not compiled.
bytecode:
	@$(PY) -m compileall -q -j 0 src/opencbr >/dev/null

## Debian packages the tests need (installed only when missing; needs root or sudo).
deps-test:
	@missing=""; for p in e2fsprogs:mkfs.ext4 dosfstools:mkfs.vfat mtools:mcopy fdisk:sfdisk chromium:chromium lvm2:lvcreate; do \
	  cmd=$${p#*:}; pkg=$${p%%:*}; command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

## make test: everything the tests need, then the whole suite, in random order (pytest-randomly prints
## the seed: PYTEST_ARGS=--randomly-seed=N repeats an order, -p no:randomly turns it off) on three worker
## processes (pytest-xdist; more than the two cores, because much of the suite waits on subprocesses,
## disks and sockets), each test file kept on one worker so its module-scoped servers start once.
test: venv deps-test
	$(VENV)/bin/python -m pytest -q -n 3 --dist loadfile $(PYTEST_ARGS)

## make lock: re-pin the transitive dependencies after changing pyproject.toml.
lock:
	$(PIP) install -q -e '.[test]'
	$(PIP) freeze --exclude-editable | grep -v '^-e' > constraints.txt

## make agent-package: the agent's wheel and source package in dist/ (for hosts without access to the service)
agent-package: venv
	$(PY) -m opencbr.agentlink.package dist

bench-disk: venv
	$(PY) bench/disk.py

bench-tree: venv
	$(PY) bench/tree.py

clean:
	rm -rf $(VENV) .pytest_cache build dist *.egg-info
	find src -name '*.so' -delete
