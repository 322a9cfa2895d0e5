# Two commands for a newcomer: `make demo` and `make test`. Both install into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch pinned here; which build pip takes depends on its configuration: where pip has a local CPU
# wheel (this project's build machines) the CPU build, on a plain Linux machine the CUDA build
# (several GB). Choose with TORCH="torch==2.13.0 --index-url <PyTorch's CPU index>" (README).
# The package itself asks only for torch>=2.6, so users with GPUs get theirs.
TORCH ?= torch==2.13.0

.PHONY: install demo test bench clean

$(BIN)/makemore: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[dev,plot]"
	touch $@

install: $(BIN)/makemore

demo: install
	$(BIN)/makemore train --type transformer --max-seconds 60 --max-steps 100000 --eval-interval 1000 --overwrite
	$(BIN)/makemore sample -n 20 --seed 1

test: install
	$(BIN)/python -m pytest tests -q

bench: install
	$(BIN)/python bench/train_speed.py

clean:
	rm -rf $(VENV) checkpoints/*/
