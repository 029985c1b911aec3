# kerasline: every target takes EXP=<experiment> (a name under experiments/) and SET="key=value ...".
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
EXP    ?= mnist_cnn
SET    ?=
PORT   ?= 6006
WORKERS ?= 2
KL     := $(BIN)/kerasline

SERVER ?= http://127.0.0.1:8501
BENCH  ?=

.PHONY: help setup train train-local-cluster tune evaluate export tensorboard test bench lint clean serve deploy rollback \
	predict anomaly runs

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-20s %s\n", $$1, $$2}'
	@echo "  EXP=$(EXP)  SET=\"key=value ...\"  e.g. make train SET=\"training.epochs=3\""

setup: $(VENV)/.installed  ## create .venv and install the pinned stack

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	# jax (and scipy, which only jax needs), for tests/test_backends.py only, in a folder of its own: TensorFlow 2.21
	# imports jax at startup whenever it can (tensorflow/lite/python/util.py), 1.2 s of each TensorFlow process's 6.7 s.
	$(BIN)/python -m pip install -q --no-deps --upgrade --target $(VENV)/jax -c constraints.txt jax jaxlib scipy
	$(BIN)/python -m pip uninstall -q -y jax jaxlib 2>/dev/null  # a venv from before the move: jax leaves it
	touch $@

train: setup  ## train EXP (resumes an unfinished run), test it, export it
	$(KL) train $(EXP) $(SET)

train-local-cluster: setup  ## train EXP with WORKERS=2 worker processes on 127.0.0.1 (MultiWorkerMirroredStrategy)
	$(BIN)/python -m kerasline.cluster --workers $(WORKERS) $(EXP) $(SET)

tune: setup  ## search EXP's [tune] space (resumes); writes experiments/tuned/EXP.toml
	$(KL) tune $(EXP) $(SET)

evaluate: setup  ## test metrics of EXP's latest run; BLESSED / NOT_BLESSED for its newest export
	$(KL) evaluate $(EXP) $(SET)

export: setup  ## export EXP's latest finished run: SavedModel + ONNX, verified
	$(KL) export $(EXP) $(SET)

serve: setup  ## TF Serving (Docker) on 127.0.0.1:8500/8501, else the development server
	$(KL) serve $(EXP) $(SET)

deploy: setup  ## point the stable label at EXP's newest export, if blessed
	$(KL) deploy $(EXP) $(SET)

rollback: setup  ## move the stable label back to the previous stable version
	$(KL) rollback $(EXP) $(SET)

# INPUT without SERVER= on the command line: the local form; otherwise the server form, as before INPUT existed.
PREDICT_LOCAL = $(and $(INPUT),$(filter-out command line,$(origin SERVER)))

predict: setup  ## INPUT=path: predict files in-process (predictions.csv); else held-out inputs through SERVER
	$(KL) predict $(EXP) $(SET) $(if $(PREDICT_LOCAL),--input $(INPUT),--server $(SERVER) $(if $(INPUT),--input $(INPUT)))

anomaly: setup  ## an autoencoder EXP's reconstruction error per input (INPUT=file.npy, default: the test split)
	$(KL) anomaly $(EXP) $(SET) $(if $(INPUT),--input $(INPUT))

runs: setup  ## table of EXP's runs (every experiment's unless EXP= is given); COMPARE="run-001 run-002"
	$(KL) runs $(if $(filter command line environment,$(origin EXP)),$(EXP) $(SET)) $(if $(COMPARE),--compare $(COMPARE))

tensorboard: setup  ## serve runs/ on 127.0.0.1 (PORT=6006)
	@echo "TensorBoard: http://127.0.0.1:$(PORT)/  (logdir runs/)"
	$(BIN)/tensorboard --logdir runs --host 127.0.0.1 --port $(PORT)

# One test file per core on CI's two: a file's tests, and the runs its module fixtures train, stay on one worker.
test: setup  ## the test suite (what CI runs)
	$(BIN)/pytest -n 2 --dist loadfile

bench: setup  ## benchmarks, 45 min on 2 idle cores (refuses if loaded): results.json, RESULTS.md (BENCH="--quick": 8 min; "--allow-load"; "--perf"; "--targets": issue #17's figures, 23 min)
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q -c constraints.txt -e ".[bench]"
	$(BIN)/python -m benchmarks.run $(BENCH)

lint: setup  ## ruff, and import-linter's contracts: the layers' direction, no import circles (tests/test_layers.py)
	$(BIN)/ruff check .
	$(BIN)/pytest -q -p no:cacheprovider tests/test_layers.py

clean:  ## remove runs, exports and caches (keeps .venv)
	rm -rf runs exports .pytest_cache .ruff_cache
