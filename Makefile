# icar_dense developer entry points. `make test` is the README's test command
# and what CI runs: it creates/completes .venv (idempotent), then runs pytest.
VENV      ?= .venv
PYTHON    ?= python3
PY        := $(VENV)/bin/python
ENV_STAMP := $(VENV)/.icar_dense_env
PYTEST_ARGS ?=
# TEST_THREADS=N runs the whole suite, and every tool it starts, with N
# torch/OpenMP threads (`make test TEST_THREADS=1`, `TEST_THREADS=2`): the
# suite must pass with any count. Unset, modules marked `one_thread` use one
# thread and the rest torch's default (the core count).
TEST_THREADS ?=
# TEST_WORKERS=N runs the suite in N pytest-xdist processes, whole test files
# each (module fixtures are built once); each process runs torch with
# cores/N threads unless TEST_THREADS is given. Most tests and every tool
# they start run one thread, so 2 workers keep both cores of a 2-core CI
# machine busy. TEST_WORKERS=0 runs the suite in one process.
TEST_WORKERS ?= 2
WORKER_ARGS := $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile,)
THREAD_ENV := $(if $(TEST_THREADS),OMP_NUM_THREADS=$(TEST_THREADS) ICAR_TEST_THREADS=$(TEST_THREADS),)

.PHONY: env test demo bench lint clean-env

# The stamp is newer than every pin file once the environment is complete,
# so a second `make test` goes straight to pytest.
$(ENV_STAMP): requirements/torch.txt requirements/build.txt requirements/mmcv.txt \
              requirements/runtime.txt requirements/tests.txt setup.cfg pyproject.toml \
              tools/install/setup_env.sh tools/install/build_mmcv.sh
	PYTHON=$(PYTHON) tools/install/setup_env.sh $(VENV)
	touch $@

env: $(ENV_STAMP)

test: env
	@$(THREAD_ENV) HF_HUB_OFFLINE=1 $(PY) -m pytest tests $(WORKER_ARGS) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5): failing"; exit 1; fi; \
	exit $$rc

demo: env
	HF_HUB_OFFLINE=1 $(PY) tools/demo_lvis.py

bench: env
	HF_HUB_OFFLINE=1 $(PY) benchmarks/run_all.py

lint: env
	$(PY) -m flake8 icar_dense tools tests benchmarks

clean-env:
	rm -rf $(VENV)
