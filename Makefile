# Two commands do all set-up on a fresh machine:
#   make demo   - synthetic data, two short training runs, evaluation, HTML report
#   make test   - the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install test demo browser clean mutation gpu-wheels

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Debian's Chromium renders the HTML report in a test; the test skips without it.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "warning: could not install chromium; the report browser test will skip"; \
	  else echo "warning: chromium not installed; the report browser test will skip"; fi; }

# One torch thread unless OMP_NUM_THREADS says otherwise: the suite's models are small, so it
# runs as fast on one thread (146-168 s against about 150 s with two on the 2-core machine),
# and with anything else busy beside it two threads wait on each other (a test file measured
# 6x slower).
test: $(STAMP) browser
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -q

# Mutation testing (docs/testing.md), not part of `make test`: mutmut breaks the modules
# in MUTATE one token at a time and runs the fast test selection of [tool.mutmut] in
# pyproject.toml against each break. Scores are printed per module at the end;
# `.venv/bin/mutmut show NAME` prints one mutant. A module must also be listed in
# only_mutate there. Low priority and single-threaded torch, so it shares a 2-core box.
MUTATE ?= src/vidpred/training/schedules.py src/vidpred/evaluation/metrics.py src/vidpred/reporting/media.py
MUTMUT_CHILDREN ?= 2
MUTMUT := OMP_NUM_THREADS=1 nice -n 19 $(VENV)/bin/mutmut
# src/vidpred/a/b.py -> "vidpred.a.b.*", the names of that module's mutants
MUTANT_GLOBS = $(foreach m,$(MUTATE),"$(subst /,.,$(patsubst src/%.py,%,$(m))).*")

mutation: $(STAMP)
	@for m in $(MUTATE); do grep -q "\"$$m\"" pyproject.toml || \
	  { echo "$$m is not in [tool.mutmut] only_mutate (pyproject.toml)"; exit 2; }; done
	rm -rf mutants && mkdir mutants
	$(MUTMUT) run --max-children $(MUTMUT_CHILDREN) $(MUTANT_GLOBS) > mutants/make-mutation.log 2>&1 || \
	  { tail -c 4000 mutants/make-mutation.log; exit 1; }
	@echo "surviving and untested mutants (.venv/bin/mutmut show NAME):"
	@$(VENV)/bin/mutmut results | grep -F $(foreach m,$(MUTANT_GLOBS),-e $(subst *,,$(m))) || true
	@$(VENV)/bin/mutmut results --all true | awk -F': ' -v mods="$(MUTANT_GLOBS)" \
	  'BEGIN { gsub(/[*"]/, "", mods); n = split(mods, want, " ") } \
	   /__mutmut_/ { name = $$1; sub(/^ +/, "", name); mod = name; sub(/\.[^.]*__mutmut_[0-9]+$$/, "", mod); \
	     keep = 0; for (i = 1; i <= n; i++) if (mod "." == want[i]) keep = 1; if (!keep) next; \
	     total[mod]++; count[mod, $$2]++ } \
	   END { printf "%-34s %8s %7s %9s %6s %7s\n", "module", "mutants", "killed", "survived", "other", "score"; \
	     for (m in total) { k = count[m, "killed"]; s = count[m, "survived"]; \
	       printf "%-34s %8d %7d %9d %6d %6.1f%%\n", m, total[m], k, s, total[m] - k - s, 100 * k / total[m] } }'

demo: $(STAMP)
	$(VENV)/bin/vidpred demo --out demo_out

# Wheels that the GPU machines' image lacks (CPython 3.12 there), for benchmarks/gpu_check.sh:
# carry .gpu in the device tool's run.
gpu-wheels: $(STAMP)
	$(PY) -m pip download --quiet --only-binary=:all: --no-deps --python-version 3.12 \
	  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
	  -d .gpu/wheels pymunk==$$($(PY) -c "import pymunk; print(pymunk.version)") cffi pycparser tfrecord
	@ls .gpu/wheels

clean:
	rm -rf $(VENV) demo_out .pytest_cache mutants
