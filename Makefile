# dfa-bench. `make run` installs and trains the main job; `make test` installs and runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Data root: ../shared/data when it exists (this workplace), else ./data (downloads land there).
export DFA_BENCH_DATA ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),$(CURDIR)/data)

.PHONY: install run test check gpu-check eval-nerf-published sweep sweep-gat-as-run sweep-spline sweep-dfagnn sweep-dfagnn-models sweep-gae sweep-recsys sweep-recsys-lr sweep-recsys-teacher sweep-lm sweep-nerf sweep-nerf-as-run sweep-methods sweep-bottleneck sweep-tsne tables bench bench-paper-cpu clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -e '.[dev]'
	@# dfa-bench reads the data root from here when DFA_BENCH_DATA is not set (README, "Data")
	echo "$(DFA_BENCH_DATA)" > $(VENV)/dfa-bench-data-root
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

# Table 3's GAT cells as the paper's code ran them (feedback point before the hidden dropout); BP is the
# same as model=gat's.
sweep-gat-as-run: install
	$(BIN)/dfa-bench -m task=gcn dataset=cora,citeseer model=gat_as_run method=dfa,shallow seed=0,1,2,3,4 \
		hydra.sweep.dir=results/sweeps/table3-graph-gat-as-run

# SplineConv (plain-torch B-splines) on Table 3's graphs, 5 seeds (30 runs; about 20 minutes on 2 CPU cores).
sweep-spline: install
	$(BIN)/dfa-bench -m task=gcn dataset=cora,citeseer model=spline method=bp,dfa,shallow seed=0,1,2,3,4 \
		hydra.sweep.dir=results/sweeps/table3-graph-spline

# DFA-GNN's protocol (Zhao et al. 2024): 3-layer GCN, random 60/20/20 splits, 1000 epochs, 10 seeds (80
# runs, about 50 minutes on 2 CPU cores); then its ablations, 5 seeds (30 runs): no pseudo-error and no node
# filter (their "DFA" row), no node filter, no topology.
sweep-dfagnn: install
	$(BIN)/dfa-bench -m experiment=dfagnn_cora,dfagnn_citeseer method=bp,dfa,shallow,dfa_gnn \
		seed=0,1,2,3,4,5,6,7,8,9 hydra.sweep.dir=results/sweeps/dfagnn
	$(BIN)/dfa-bench -m experiment=dfagnn_cora,dfagnn_citeseer method=dfa_gnn method.pseudo_error=false,true \
		method.node_filter=false seed=0,1,2,3,4 hydra.sweep.dir=results/sweeps/dfagnn-ablation
	$(BIN)/dfa-bench -m experiment=dfagnn_cora,dfagnn_citeseer method=dfa_gnn method.topology=false \
		seed=0,1,2,3,4 hydra.sweep.dir=results/sweeps/dfagnn-no-topology

# DFA-GNN's Table 4 on Cora: its protocol with a 3-layer ChebNet and GAT, BP and DFA-GNN, 5 seeds (20 runs).
sweep-dfagnn-models: install
	$(BIN)/dfa-bench -m experiment=dfagnn_cora model=cheb3,gat3 method=bp,dfa_gnn seed=0,1,2,3,4 \
		hydra.sweep.dir=results/sweeps/dfagnn-models

# FA, DRTP and the random-feedback control on Table 3's graphs and models, 5 seeds (90 runs).
sweep-methods: install
	$(BIN)/dfa-bench -m task=gcn dataset=cora,citeseer model=gcn,cheb,gat method=fa,random_feedback \
		seed=0,1,2,3,4 hydra.sweep.dir=results/sweeps/table3-graph-methods
	$(BIN)/dfa-bench -m task=gcn dataset=cora,citeseer model=gcn,cheb,gat method=drtp \
		seed=0,1,2,3,4 hydra.sweep.dir=results/sweeps/table3-graph-drtp
	$(BIN)/dfa-bench -m task=gcn dataset=cora,citeseer model=gcn,cheb,gat method=random_feedback \
		method.control=noise seed=0,1,2,3,4 hydra.sweep.dir=results/sweeps/table3-graph-control-noise

# The companion paper's bottleneck study on scikit-learn's digits: 14 widths, simulated (mask) and real.
sweep-bottleneck: install
	$(BIN)/dfa-bench -m experiment=bottleneck_digits hydra.sweep.dir=results/sweeps/bottleneck-digits-mask
	$(BIN)/dfa-bench -m experiment=bottleneck_digits model.bottleneck.mode=width \
		hydra.sweep.dir=results/sweeps/bottleneck-digits-width

# The paper's Figure 2: t-SNE of GCN's hidden layer on Cora under each method (seed 0).
sweep-tsne: install
	$(BIN)/dfa-bench -m task=gcn dataset=cora model=gcn method=bp,dfa,shallow,fa,random_feedback \
		task.tsne=true hydra.sweep.dir=results/sweeps/figure2-tsne
	$(BIN)/dfa-bench -m task=gcn dataset=cora model=gcn method=drtp task.tsne=true \
		hydra.sweep.dir=results/sweeps/figure2-tsne-drtp

# Table 4: graph autoencoder on Cora and CiteSeer, 5 seeds.
sweep-gae: install
	$(BIN)/dfa-bench -m task=gae dataset=cora,citeseer method=bp,dfa,shallow seed=0,1,2,3,4 \
		hydra.sweep.dir=results/sweeps/table4-gae

# Table 2 on the 10,000-row Criteo sample (sanity check; the paper's numbers need the full train.txt).
sweep-recsys: install
	$(BIN)/dfa-bench -m task=recsys dataset=criteo_sample model=fm method=bp seed=0,1,2 \
		hydra.sweep.dir=results/sweeps/table2-recsys-fm
	$(BIN)/dfa-bench -m task=recsys dataset=criteo_sample model=deepfm,deepcross,autoint,afn \
		method=bp,dfa,shallow seed=0,1,2 hydra.sweep.dir=results/sweeps/table2-recsys
	$(BIN)/dfa-bench -m task=recsys dataset=movielens100k model=deepfm method=bp,dfa,shallow seed=0,1,2 \
		hydra.sweep.dir=results/sweeps/table2-recsys-movielens

# The recommender learning-rate study (issue 15): DeepFM on MovieLens-100K and the Criteo sample, every method
# at 7 learning rates (the second and third lines widen the grid's top, 3e-2 then 1e-1, each time DFA's best
# was the grid's largest), 3 seeds (126 runs; about 45 minutes on 2 CPU cores); then the diagnostic DeepFM with
# a feedback point on the MLP's input, under DFA (24 runs); results/tables/recsys-lr.md.
sweep-recsys-lr: install
	$(BIN)/dfa-bench -m experiment=recsys_lr dataset=movielens100k,criteo_sample model=deepfm method=bp,dfa,shallow \
		task.lr=1e-4,3e-4,1e-3,3e-3,1e-2 seed=0,1,2 hydra.sweep.dir=results/sweeps/recsys-lr
	$(BIN)/dfa-bench -m experiment=recsys_lr dataset=movielens100k,criteo_sample model=deepfm method=bp,dfa,shallow \
		task.lr=3e-2 seed=0,1,2 hydra.sweep.dir=results/sweeps/recsys-lr-3e-2
	$(BIN)/dfa-bench -m experiment=recsys_lr dataset=movielens100k,criteo_sample model=deepfm method=bp,dfa,shallow \
		task.lr=1e-1 seed=0,1,2 hydra.sweep.dir=results/sweeps/recsys-lr-1e-1
	$(BIN)/dfa-bench -m experiment=recsys_lr dataset=movielens100k,criteo_sample model=deepfm_embedding_feedback \
		method=dfa task.lr=1e-3,3e-3,1e-2,3e-2 seed=0,1,2 hydra.sweep.dir=results/sweeps/recsys-lr-embedding-feedback

# The recommender data-size study (issue 15) on generated teacher data (dataset=ctr_teacher, generated once into
# the cache): DeepFM under each method at 2 learning rates, 1 seed, on 100k to 3M rows, fewer epochs on more
# rows; then the embedding-feedback diagnostic under DFA on 300k and 1M rows (28 runs; about 90 minutes on 2
# CPU cores); results/tables/recsys-lr.md and its data-size figure.
TEACHER := experiment=recsys_teacher method=bp,dfa,shallow task.lr=1e-3,3e-3
sweep-recsys-teacher: install
	$(BIN)/dfa-bench -m $(TEACHER) dataset.rows=100000 task.epochs=20 hydra.sweep.dir=results/sweeps/recsys-teacher-100k
	$(BIN)/dfa-bench -m $(TEACHER) dataset.rows=300000 task.epochs=10 hydra.sweep.dir=results/sweeps/recsys-teacher-300k
	$(BIN)/dfa-bench -m $(TEACHER) dataset.rows=1000000 task.epochs=5 hydra.sweep.dir=results/sweeps/recsys-teacher-1m
	$(BIN)/dfa-bench -m $(TEACHER) dataset.rows=3000000 task.epochs=3 hydra.sweep.dir=results/sweeps/recsys-teacher-3m
	$(BIN)/dfa-bench -m experiment=recsys_teacher model=deepfm_embedding_feedback method=dfa task.lr=1e-3,3e-3 \
		dataset.rows=300000 task.epochs=10 hydra.sweep.dir=results/sweeps/recsys-teacher-300k-embedding-feedback
	$(BIN)/dfa-bench -m experiment=recsys_teacher model=deepfm_embedding_feedback method=dfa task.lr=1e-3,3e-3 \
		dataset.rows=1000000 task.epochs=5 hydra.sweep.dir=results/sweeps/recsys-teacher-1m-embedding-feedback

# Table 5 at CPU size: the tiny LM (2 x 64) on all of WikiText-2, 5 epochs, 64 streams x 64 tokens.
LM_CPU := experiment=lm_tiny dataset.max_train_chars=null dataset.max_eval_chars=null task.epochs=5 \
	task.batch_size=64 task.context=64
sweep-lm: install
	$(BIN)/dfa-bench -m $(LM_CPU) method=bp,shallow hydra.sweep.dir=results/sweeps/table5-lm-cpu-bp
	$(BIN)/dfa-bench -m $(LM_CPU) method=dfa dfa.placement=macro,micro hydra.sweep.dir=results/sweeps/table5-lm-cpu-dfa

# Table A.5 at CPU size: the tiny NeRF on lego (40x40) and fern (50x37), 2,000 iterations.
sweep-nerf: install
	$(BIN)/dfa-bench -m experiment=nerf_tiny scene=lego,fern dataset.downscale=20 method=bp,shallow \
		task.iterations=2000 task.eval_every=500 hydra.sweep.dir=results/sweeps/tableA5-nerf-cpu
	$(BIN)/dfa-bench -m experiment=nerf_tiny scene=lego,fern dataset.downscale=20 method=dfa \
		task.iterations=2000 task.eval_every=500 hydra.sweep.dir=results/sweeps/tableA5-nerf-cpu-dfa

# Table A.5's lego with the published models' architecture (nerf_as_run: 4 x 128 trunk, 64 + 128 samples per ray)
# at the largest CPU scale one session allows: 100 x 100 images (downscale 8), 512 rays x 4,000 iterations (the
# paper: 800 x 800, 1,024 rays x 500,000), the paper's per-method learning rates (BP 5e-4, DFA and shallow 1e-4).
# Measured: BP 95 minutes, DFA 70 and shallow 46 after it, under 2 hours on 2 CPU cores; the test views are
# rendered whole (SSIM and PNGs in each run's renders/).
sweep-nerf-as-run: install
	$(BIN)/dfa-bench -m task=nerf scene=lego model=nerf_as_run method=bp,dfa,shallow dataset.downscale=8 \
		task.rays=512 task.iterations=4000 task.eval_every=250 hydra.sweep.dir=results/sweeps/tableA5-nerf-as-run-lego

# The paper's published DFA NeRF models scored with our renderer (1,000 seeded pixels per lego test view,
# 10,000 per fern hold-out view), and lego's whole test views at 1/8 scale, the scale of sweep-nerf-as-run:
# reference rows of the NeRF table.
PUBLISHED_NERF := $(DFA_BENCH_DATA)/nerf/pretrained_dfa
eval-nerf-published: install
	$(BIN)/dfa-bench task=nerf scene=lego mode=eval checkpoint=$(PUBLISHED_NERF)/synth_lego_dfa.ckpt threads=1 \
		task.eval_pixels=1000 task.eval_out=results/sweeps/nerf-published/eval-lego-published-dfa.json
	$(BIN)/dfa-bench task=nerf scene=fern mode=eval checkpoint=$(PUBLISHED_NERF)/real_fern_dfa.ckpt threads=1 \
		task.eval_pixels=10000 task.eval_out=results/sweeps/nerf-published/eval-fern-published-dfa.json
	$(BIN)/dfa-bench task=nerf scene=lego dataset.downscale=8 mode=eval checkpoint=$(PUBLISHED_NERF)/synth_lego_dfa.ckpt \
		threads=1 task.eval_out=results/sweeps/nerf-published/eval-lego-published-dfa-downscale8.json

# The tables, figures and results/README.md from the curated runs in results/sweeps/.
tables: install
	$(BIN)/dfa-bench-tables

# Which curated runs are not what their target above makes today (exit 1 if any).
check: install
	$(BIN)/dfa-bench-tables --check

bench: install
	$(BIN)/dfa-bench-bench

# The paper's NeRF MLP (8 x 256, 1024 rays x 192 samples) and LM (6 x 512, 8 x 128 tokens a step) on the
# CPU, at widths 64 to 512: step-time ratios and the ratio-against-width figures, then the paper-size NeRF
# with a longer warm-up (about 20 minutes on 2 cores and 20 GB of memory). One process per model, so that
# the NeRF's memory does not stay with the LM's.
bench-paper-cpu: install
	$(BIN)/dfa-bench-bench --case nerf-paper --widths 64,128,256,512 --steps 3 --warmup 1 \
		-- device=cpu task.precision=fp32
	$(BIN)/dfa-bench-bench --case lm-paper-cpu --widths 64,128,256,512 --steps 10 --warmup 2 \
		-- device=cpu task.precision=fp32
	$(BIN)/dfa-bench-bench --case nerf-paper --steps 5 --warmup 3 -- device=cpu task.precision=fp32

# On a machine with a GPU: every task's smallest preset in fp32, tf32 and bf16 under every method, bf16 DFA
# updates against fp32, then the paper-size benchmark cases. Without a GPU it says so and exits 0.
gpu-check: install
	$(BIN)/python -m dfa_bench.gpu_check

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
