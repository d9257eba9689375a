# Set-up is part of every target: a fresh machine needs only `make test` or `make demo`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.rat-installed
DEMO_DIR ?= demo_out
TABLE_DIR ?= paper_table_out

.PHONY: test demo paper-table bench gpu-check lint clean-demo

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# torch/torchvision pinned to the builds that pip takes from this machine's disk.
# The distribution was once named `rat` (an unrelated project's name on the index): an editable install of
# that name in this venv is ours, and is replaced by rat-restore.
$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip uninstall --quiet --yes rat 2>/dev/null || true
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m pip install --quiet --no-deps ldct-benchmark==0.0.15  # its pins (pydicom==3.0.1, wandb) would break ours
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest -q

bench: $(STAMP)
	@for f in benchmarks/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

# Every CUDA path once (GPU tests, bench_gpu, 200 bf16 training steps, SAM ViT-B masks), at most 8 minutes on
# one GPU; exit status 3 without CUDA (nothing checked), 1 when a step failed.
gpu-check: $(STAMP)
	$(PY) benchmarks/gpu_check.py

demo: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" DEMO_DIR="$(DEMO_DIR)" $(if $(DEMO_ITERS),DEMO_ITERS="$(DEMO_ITERS)") \
	  bash .ci/demo.sh

# RAT against its baselines on real images (pydicom-data CT, CMU-1 pathology) by `rat-train table`, CPU budget
paper-table: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" TABLE_DIR="$(TABLE_DIR)" bash .ci/paper_table.sh

clean-demo:
	rm -rf $(DEMO_DIR)
