# The two commands a newcomer runs first: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

.PHONY: install demo test
install: $(PY)
	$(PY) -m pip install -q -e '.[demo]'

demo: install
	$(VENV)/bin/tmeter demo

test:
	python3 -m pytest -q
