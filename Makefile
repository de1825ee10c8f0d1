# Set-up, training and tests. Every target creates the virtual environment first if it is missing.
# torch is installed on its own first: `torch==2.13.0` takes the local CPU wheel; an unpinned torch would pull
# several GB of CUDA packages.
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=
# One OpenMP/torch thread unless the caller sets it: on a machine whose cores are shared, more threads wait on each
# other (docs/SPEED.md, "Torch threads"). Training also applies run.threads (default 1); tests/conftest.py pins 1.
export OMP_NUM_THREADS ?= 1

.PHONY: setup train test lint clean
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test,sweep]"
	touch $@

train: setup  ## the default short continual run: Pong → Breakout → Pong → Freeway
	$(PY) scripts/train.py configs/default.yaml $(ARGS)

test: setup  ## lint, type-check, then the whole test suite
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy -p cl_rl -p agents -p envs  # type-check the library packages (scripts/ and tests/ are not checked)
	$(PY) -m pytest -q -n 2 --dist loadfile  # two workers (the CI machine's cores), each test file in one of them

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
