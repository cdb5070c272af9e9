# The two commands a newcomer runs first: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
# Written once the test extras are installed: pip runs again only when pyproject.toml changes.
TEST_DEPS := $(VENV)/.test-deps

# Prerequisites are made in the order listed: the Debian peers (python3-venv among them) before
# the venv, the venv before the extras.
.NOTPARALLEL:

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

.PHONY: install demo test peers
install: $(PY)
	$(PY) -m pip install -q -e '.[demo]'

demo: install
	$(VENV)/bin/tmeter demo

peers:
	@sh tests/peers.sh

$(TEST_DEPS): pyproject.toml | $(PY)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,simbench]'
	touch $@

# Extra pytest arguments: make test ARGS="tests/gateway -x"
test: peers $(TEST_DEPS)
	$(PY) -m pytest -q $(ARGS)
