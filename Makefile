# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
# uv from PATH if there is one, else the copy `make` installs into python3 itself.
UV ?= $(shell command -v uv 2>/dev/null || echo python3 -m uv)
export UV_PYTHON_DOWNLOADS := never
# Let Python cache bytecode for our own modules too (this machine disables it by default).
unexport PYTHONDONTWRITEBYTECODE
VENV := .venv
STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed

.PHONY: env browser servers demo test lint bench network clean

$(STAMP): pyproject.toml uv.lock
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --all-extras --python python3 --compile-bytecode
	@touch $(STAMP)

# anvil (local Base chain) and solc-js come from the npm registry, pinned in package-lock.json.
$(NODE_STAMP): package.json package-lock.json
	@command -v npm >/dev/null || (apt-get update -qq && apt-get install -y -qq nodejs npm)
	npm ci --no-audit --no-fund --loglevel=error
	@touch $(NODE_STAMP)

env: $(STAMP) $(NODE_STAMP)

# The approval page is tested in Debian's headless chromium, driven through its chromedriver.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver)

# The shared-ledger tests and benchmarks run real Redis and PostgreSQL servers: installed here
# from Debian if missing (as root), started by the tests themselves on 127.0.0.1 (free ports,
# temporary directories, PostgreSQL as an unprivileged user) and stopped by PID at the end
# (tests/ledger/servers.py). If they cannot be installed, those tests are skipped and listed.
servers:
	@command -v redis-server >/dev/null && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends redis-server postgresql) || \
		echo "*** could not install redis-server/postgresql: their ledger tests will be skipped"

demo: env
	$(UV) run --no-sync python examples/demo.py

test: env browser servers
	$(UV) run --no-sync pytest -q

lint: env
	$(UV) run --no-sync ruff check agentguard tests benchmarks adapters examples
	$(UV) run --no-sync mypy

# Runs every benchmarks/bench_*.py and writes docs/performance.md and docs/performance.json
# (benchmarks/report.py); BENCH_ARGS="--quick" for a tiny run, "--only network" for one.
bench: env servers
	$(UV) run --no-sync python benchmarks/report.py $(BENCH_ARGS)

network: env
	$(UV) run --no-sync agentguard network up

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
