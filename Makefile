# Every target sets up what it needs: virtualenv, install, generated code.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
PB_DIR := src/ensemble_extproc/_pb
PB_STAMP := $(PB_DIR)/.generated
PROTOS := $(shell find protos -name '*.proto')
CONFIG ?= config/default.yaml
EXTPROC_REPLICAS ?= auto
UPSTREAM_REPLICAS ?= auto
PYTEST_ARGS ?=

.PHONY: all install protos run test lint clean bench-quality bench-quality-long bench-answers bench-decision load-faults bench-overhead bench-fanout bench-peer bench-scaleout bench-burst bench-wire

all: test

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(INSTALLED): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev,otel]'
	touch $@

install: $(INSTALLED) $(PB_STAMP)

# Python stubs for our ext_proc API subset; regenerated whenever a .proto changes.
$(PB_STAMP): $(PROTOS) tools/gen_protos.py $(INSTALLED)
	$(PY) tools/gen_protos.py --out $(PB_DIR)
	touch $@

protos: $(PB_STAMP)

# The config file's JSON Schema, generated from its declaration (src/.../config/model.py).
.PHONY: schema
schema: install
	$(PY) -m ensemble_extproc config-schema > config/schema.json

# The image's dependencies, pinned with their hashes (the Dockerfile installs them with
# --require-hashes): runtime from pyproject.toml with the otel extra (so tracing can be
# turned on in the image by config alone), build stage from requirements/build.in.
# Keeps the current pins that still fit; `make lock LOCK_ARGS=--upgrade` takes new releases.
LOCK_ARGS ?=
LOCK_FLAGS := --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
	--no-emit-find-links --no-emit-trusted-host
.PHONY: lock
lock: install
	$(VENV)/bin/pip-compile $(LOCK_FLAGS) $(LOCK_ARGS) --extra otel -o requirements/lock.txt pyproject.toml
	$(VENV)/bin/pip-compile $(LOCK_FLAGS) $(LOCK_ARGS) -o requirements/build-lock.txt \
		requirements/build.in

run: install
	$(PY) -m ensemble_extproc run --config $(CONFIG) \
		--extproc-replicas $(EXTPROC_REPLICAS) --upstream-replicas $(UPSTREAM_REPLICAS)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check src tests tools bench
	$(VENV)/bin/ruff format --check src tests tools bench
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy --strict bench

# Accuracy of every strategy on demo quiz models with known accuracies (prints a table).
bench-quality: install
	$(PY) -m bench.quality --questions 2000 --seed 1 --concurrency 16

# Accuracy and upstream CPU with short answers and 1-4 KB chains of thought, plus the
# 0.9/0.6/0.6/0.6/0.6 scenarios (prints a table); the upstream runs as its own process.
bench-quality-long: install
	$(PY) -m bench.quality --questions 2000 --seed 1 --concurrency 16 --strategies voting,weighted \
		--singles none --answers both --scenarios --upstream process

# What one answer's extraction costs (median and p99), short and 3 KB answers.
bench-answers: install
	$(PY) -m bench.answers

# Learned trust, simulated (no servers): learned vs true accuracies, convergence, flagged
# clones, accuracy against true-accuracy weighted, voting and the best model; CPU (~1 min).
.PHONY: bench-trust
bench-trust: install
	$(PY) -m bench.trust_sim --seeds 20 --warmup 500 --questions 2000

# Learned trust, live: the issue's scenarios through the upstream with demo quiz models,
# learning on, after a warm-up; upstream CPU with trust on and off (~15 min).
.PHONY: bench-trust-live
bench-trust-live: install
	$(PY) -m bench.trust_live --warmup 500 --questions 2000 --cpu 2000

# The processor's decision cost per request, with and without the body (prints a table).
bench-decision: install
	$(PY) -m bench.decision

# The upstream's JSON path (request decode, completion encode, start-up), the project's
# against msgspec and pydantic v2 alone (prints tables, ~1 min).
bench-wire: install
	$(PY) -m bench.wire

# The processor's CPU per request with tracing off and on; AGAINST=<another checkout, e.g.
# main's> adds it as the baseline, in the same run (prints a table, ~2 min).
AGAINST ?=
.PHONY: bench-tracing
bench-tracing: install
	$(PY) -m bench.tracing $(if $(AGAINST),--against $(AGAINST)) --streams 4000 --rounds 6

# Minutes of mixed traffic through the gateway while model endpoints misbehave.
load-faults: install
	$(PY) -m bench.load_faults --seconds 120 --concurrency 16

# Property-based fuzzing of the API against its OpenAPI document (schemathesis), longer than
# the bounded run in `make test`: 1000 examples per operation; prints each run's summary.
.PHONY: fuzz
fuzz: install
	ENSEMBLE_FUZZ_EXAMPLES=1000 ENSEMBLE_FUZZ_TIMEOUT=1200 $(PY) -m pytest tests/test_fuzz_api.py -s -q

# What Envoy, the processor and the upstream add per request (wrk; prints tables, ~25 min).
bench-overhead: install
	$(PY) -m bench.overhead

# The upstream's fan-out latency against the model latency it must wait for (~9 min).
bench-fanout: install
	$(PY) -m bench.fanout

# The upstream's CPU per ensemble (1 and 5 models), this checkout against main in one run
# (REF=<git ref> for another baseline; ~3 min).
REF ?= main
.PHONY: bench-ensemble-cpu
bench-ensemble-cpu: install
	$(PY) -m bench.ensemble_cpu --ref $(REF) --duration 5 --rounds 5

# The same fan-out through LiteLLM's proxy, installed into bench/.peer-venv (~5 min).
bench-peer: install
	$(PY) -m bench.peer

# Throughput of the processor path with 1 to 4 processor processes behind one Envoy, and
# where the CPU went (~3 min).
bench-scaleout: install
	$(PY) -m bench.scaleout

# Plain requests' latency while 300 ensembles are kept in flight, against the same plain
# requests alone, in one run (prints tables, ~2 min).
bench-burst: install
	$(PY) -m bench.burst --seconds 15 --rate 50 --ensembles 300 --rounds 2

# Memory over 200k requests per gateway (10 % aborted by the client), against a baseline
# gateway without Envoy's graceful ext_proc close, taking turns (prints tables, ~15 min).
.PHONY: soak
soak: install
	$(PY) -m bench.soak --requests 200000 --every 10000 --warmup 20000 --baseline

clean:
	rm -rf $(PB_DIR) $(VENV) .pytest_cache .mypy_cache .ruff_cache
