# The two commands of the README: `make run` (the demo) and `make test` (the suite).
# `make run` serves as docs/deployment.md advises: a request's headers (the WebSocket handshake's too)
# must arrive within --timeout-keep-alive seconds (notifications/handshake.py), a WebSocket that stops
# answering pings is closed after --ws-ping-interval + --ws-ping-timeout.
PORT ?= 8000
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: run test check install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	rm -f $(VENV)/.installed-*
	touch $@

run: $(STAMP)
	@if ! command -v npm >/dev/null; then echo "npm not found: the demo page at / needs Node.js and npm (for redux); serving the API only."; \
	elif ! npm ci --silent --no-audit --no-fund; then echo "npm ci failed: the demo page at / needs redux; serving the API only."; fi
	$(PY) manage.py migrate --noinput
	$(PY) manage.py load_demo --port $(PORT)
	@echo "Open http://127.0.0.1:$(PORT)/ and sign in as alice, bob or carol (password demo-password); Ctrl-C stops the server."
	$(PY) -m uvicorn project.asgi:application --host 127.0.0.1 --port $(PORT) \
		--ws websockets-sansio --ws-max-size 65536 --ws-per-message-deflate false \
		--http notifications.handshake:HttpProtocol --timeout-keep-alive 5 \
		--ws-ping-interval 20 --ws-ping-timeout 20

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)
	@if command -v node >/dev/null && command -v npm >/dev/null; then \
		npm ci --silent --no-audit --no-fund && node --test tests/js/ && node --test tests/browser/; \
	elif [ -n "$$CI" ]; then \
		echo "Node.js 20 and npm are required in CI for the JS tests." >&2; exit 1; \
	else \
		echo "Skipping the JS tests: install Node.js 20 and npm to run them."; \
	fi

# Lint, format and types (CI runs it before the tests).
check: $(STAMP)
	$(PY) -m ruff check notifications api project tests bench devtools
	$(PY) -m ruff format --check notifications api project tests bench devtools
	$(PY) -m mypy

clean:
	rm -rf $(VENV) node_modules db.sqlite3* .test-db.sqlite3* .pytest_cache test-output

# Benchmarks (bench/, issue 5): `make bench` regenerates docs/benchmarks.md and docs/benchmarks.png
# (sizes: BENCH_SCALE, BENCH_SERVERS, ... see `python -m bench --help`); `make bench-smoke` is the
# tiny CI run, reported in test-output/bench-smoke.md, failing if any server delivered nothing.
BENCH_STAMP := $(VENV)/.bench-$(shell cksum bench/requirements.txt | cut -d' ' -f1)

.PHONY: bench bench-smoke

$(BENCH_STAMP): $(STAMP) bench/requirements.txt
	$(PY) -m pip install --quiet -r bench/requirements.txt
	rm -f $(VENV)/.bench-*
	touch $@

bench: $(BENCH_STAMP)
	BENCH_VIA_MAKE=1 BENCH_PROFILE=$${BENCH_PROFILE:-1} $(PY) -m bench

bench-smoke: $(BENCH_STAMP)
	$(PY) -m bench --sockets 20 --writes 10 --scenarios A,D --timeout 60 --no-profile \
		--output test-output/bench-smoke.md --plot test-output/bench-smoke.png --require-deliveries

# Hostile input (issue 3): the hypothesis tests of tests/fuzz with the `fuzz` profile, 10,000+ cases
# (`make test` runs them with the small `ci` profile). Not part of CI: it takes minutes.
.PHONY: fuzz

fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(PY) -m pytest tests/fuzz -m fuzz -o timeout=3600 -s --hypothesis-show-statistics $(PYTEST_ARGS)
