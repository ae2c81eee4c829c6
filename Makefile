# The two commands a newcomer needs: `make demo` and `make test`. Both install first if needed.
VENV ?= .venv
PY := $(VENV)/bin/python
export PYTHONHASHSEED := 0

.PHONY: install demo test test-slow parity bench clean-demo

install:
	bash tools/install.sh

demo: install
	bash tools/demo.sh

test: install
	$(PY) -m pytest -q tests -m "not slow"

test-slow: install
	$(PY) -m pytest -q tests -m slow

parity: install
	for f in ../shared/fixtures/official/*.pt; do $(PY) tools/model_converters/check_official_parity.py $$f || exit 1; done

clean-demo:
	rm -rf work_dirs/demo data/synthetic
