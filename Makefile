# dfa-bench. `make run` installs and trains the main job; `make test` installs and runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Data root: ../shared/data when it exists (this workplace), else ./data (downloads land there).
export DFA_BENCH_DATA ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),$(CURDIR)/data)

.PHONY: install run test sweep sweep-recsys tables bench clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -e '.[dev]'
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/dfa-bench task=gcn method=dfa

test: install
	WANDB_MODE=disabled $(BIN)/python -m pytest -q

# The paper's Table 3 sweep (90 runs; about 40 minutes on 2 CPU cores), then the table.
sweep: install
	$(BIN)/dfa-bench -m dataset=cora,citeseer model=gcn,cheb,gat method=bp,dfa,shallow seed=0,1,2,3,4 \
		hydra.sweep.dir=results/sweeps/table3-graph

# Table 2 on the 10,000-row Criteo sample (sanity check; the paper's numbers need the full train.txt).
sweep-recsys: install
	$(BIN)/dfa-bench -m task=recsys dataset=criteo_sample model=fm method=bp seed=0,1,2 \
		hydra.sweep.dir=results/sweeps/table2-recsys-fm
	$(BIN)/dfa-bench -m task=recsys dataset=criteo_sample model=deepfm,deepcross,autoint,afn \
		method=bp,dfa,shallow seed=0,1,2 hydra.sweep.dir=results/sweeps/table2-recsys

tables: install
	$(BIN)/dfa-bench-tables

bench: install
	$(BIN)/dfa-bench-bench

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
