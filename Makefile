# Set-up, training and tests. Every target creates the virtual environment first if it is missing.
# torch is installed on its own first: `torch==2.13.0` takes the local CPU wheel; an unpinned torch would pull
# several GB of CUDA packages.
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=
# One OpenMP/torch thread unless the caller sets it: on a machine whose cores are shared, more threads wait on each
# other (docs/SPEED.md, "Torch threads"). Training also applies run.threads (default 1); tests/conftest.py pins 1.
export OMP_NUM_THREADS ?= 1

.PHONY: setup train train-atari test docs clean gpu-check wheels retention-table
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test,sweep,docs]"
	touch $@

train: setup  ## the first run: MinAtar SpaceInvaders → Breakout → SpaceInvaders, a few minutes on a CPU
	$(PY) scripts/train.py configs/first_run.yaml $(ARGS)

train-atari: setup  ## the short ALE run: Pong → Breakout → Pong → Freeway, about 20 minutes on a 2-core CPU
	$(PY) scripts/train.py configs/atari.yaml $(ARGS)

docs: setup  ## the documentation site (docs/ and the API reference from the docstrings) in site/, strict
	$(VENV)/bin/mkdocs build --strict --quiet

test: setup  ## lint, type-check, build the docs (strict), then the whole test suite
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy -p cl_rl -p agents -p envs  # type-check the library packages (scripts/ and tests/ are not checked)
	$(VENV)/bin/mkdocs build --strict --quiet  # a broken docstring cross-reference fails here
	$(PY) -m pytest -q -n 2 --dist loadfile  # two workers (the CI machine's cores), each test file in one of them

# The tuned MinAtar retention table (docs/RESULTS.md, "How the next table is run"): the references and fine-tuning,
# the strength sweeps (seeds 100, 101), the selection, then every method at its chosen strength beside fine-tuning and
# EWC with true task ids. Finished runs are reused and interrupted ones resumed: the same command continues.
TABLE ?= runs/retention/minatar_table_tuned
TABLE_SEEDS ?= 5
TABLE_METHODS ?= finetune ewc online_ewc mas generative_replay lwf gem agem rehearsal vcl vcl+generative_replay \
	finetune@oracle ewc@oracle
retention-table: setup  ## sweep, selection and the 5-seed MinAtar retention table (about 2.5 hours on 2 idle cores)
	$(PY) scripts/bench_retention.py configs/minatar_table.yaml --methods finetune --seeds $(TABLE_SEEDS) --jobs 2 \
		--out $(TABLE)
	$(PY) scripts/sweep.py configs/sweeps/minatar_strengths.yaml
	$(PY) scripts/sweep.py configs/sweeps/minatar_memory.yaml
	$(PY) scripts/select_strengths.py sweeps/minatar_strengths sweeps/minatar_memory --references $(TABLE)
	$(PY) scripts/bench_retention.py configs/minatar_table.yaml --methods $(TABLE_METHODS) --seeds $(TABLE_SEEDS) \
		--jobs 2 --tuned $(TABLE)/tuned.yaml --out $(TABLE)

# The GPU check (docs/SPEED.md, "The GPU check") runs with the machine's own python3 and torch, not the venv's CPU
# torch: `make gpu-check ARGS="--wheels wheels"` on a machine without network. Report: gpu_check/report.md.
gpu-check:  ## speed, GPU levers, Breakout learning and a revisit on one GPU, under 9 minutes
	python3 scripts/gpu_check.py --out gpu_check $(ARGS)

# Wheels of the dependencies (torch excluded) for the GPU check on a machine without network; run it where there is
# network, with the GPU machine's Python minor version and torch version: make wheels PYVER=3.11 TORCH=2.5.1
PYVER ?= 3
TORCH ?= $(error set TORCH to the GPU machine's torch version, e.g. make wheels PYVER=3.11 TORCH=2.5.1)
WHEELS ?= wheels
wheels:
	rm -rf $(WHEELS)/.venv && mkdir -p $(WHEELS)
	python$(PYVER) -m venv $(WHEELS)/.venv
	$(WHEELS)/.venv/bin/pip install --quiet "torch==$(TORCH)" --index-url https://download.pytorch.org/whl/cpu
	python3 scripts/gpu_check.py --print-requirements > $(WHEELS)/direct.txt
	$(WHEELS)/.venv/bin/pip install --quiet -r $(WHEELS)/direct.txt
	$(WHEELS)/.venv/bin/pip freeze --exclude torch > $(WHEELS)/requirements.txt
	$(WHEELS)/.venv/bin/pip wheel --quiet --no-deps -r $(WHEELS)/requirements.txt -w $(WHEELS)
	rm -rf $(WHEELS)/.venv

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info site
