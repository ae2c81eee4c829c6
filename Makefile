# The two commands a newcomer needs: `make demo` and `make test`. Both install first if needed.
# STACK=openmmlab (default) or onedl chooses the OpenMMLab releases or the OneDL fork; give each
# its own env, e.g. `STACK=onedl VENV=.venv-onedl make test` (see docs/install.md, "Two stacks").
STACK ?= openmmlab
VENV ?= .venv
TESTS ?= tests
PY := $(VENV)/bin/python
export STACK VENV
export PYTHONHASHSEED := 0

.PHONY: install demo test test-slow parity bench clean-demo

install:
	bash tools/install.sh

demo: install
	bash tools/demo.sh

test: install
	$(PY) -m pytest -q $(TESTS) -m "not slow"

test-slow: install
	$(PY) -m pytest -q $(TESTS) -m slow

parity: install
	for f in tests/data/official/*.pt; do $(PY) tools/model_converters/check_official_parity.py $$f || exit 1; done

clean-demo:
	rm -rf work_dirs/demo data/synthetic
