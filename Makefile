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
	@$(THREAD_ENV) HF_HUB_OFFLINE=1 $(PY) -m pytest tests $(PYTEST_ARGS); rc=$$?; \
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
