# Set-up and everyday commands. `make run` and `make test` are the README's two commands.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The machine's cores, not more: threads of a torch job that share a core with another job wait
# for each other at every parallel region. Measured on 2 cores with --cores 4: the default
# run's SIREN fits took about 3x, the neural codec's training 10x, their time alone
# (benchmarks/results/default_run.md).
CORES ?= $(shell nproc 2>/dev/null || echo 2)
SNAKEMAKE := $(BIN)/snakemake
# Rules call `python -m volinr`: the environment's python must come first on PATH.
export PATH := $(abspath $(BIN)):$(PATH)
export VIRTUAL_ENV := $(abspath $(VENV))

.PHONY: setup run test fuzz lint format report readme bench pretrain-sr publish-sr peer clean

setup: $(VENV)/.installed

# torch is pinned to 2.13.0 and installed first, so that no other package pulls another build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# The whole pipeline on the embedded default (within 15 minutes on a 2-core CPU), then the report.
run: setup
	time $(SNAKEMAKE) --cores $(CORES) --resources gpu=1
	$(SNAKEMAKE) --report results/report.html

test: setup
	$(BIN)/python -m pytest

# The property-based harnesses with a longer profile than CI's (tests/test_cli_properties.py,
# tests/test_fuzz.py): about 10 minutes on 2 cores; what it finds becomes a regression test.
fuzz: setup
	VOLINR_FUZZ_EXAMPLES=300 $(BIN)/python -m pytest -p no:cacheprovider tests/test_cli_properties.py tests/test_cli_properties_files.py tests/test_fuzz.py

lint: setup
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(SNAKEMAKE) --lint
	$(BIN)/snakefmt --check workflow

format: setup
	$(BIN)/ruff format src tests
	$(BIN)/snakefmt workflow

report: setup
	$(SNAKEMAKE) --report results/report.html

# Put the last run's summary into README.md (between the results markers).
readme: setup
	$(BIN)/volinr-dev readme --summary results/summary.md --suite-summary benchmarks/results/suite_run/summary.md --readme README.md --benchmark benchmarks/results/default_run.md benchmarks/results/default_run_df421ee.md benchmarks/results/default_run_latest.md benchmarks/results/default_run_5d30fb0.md benchmarks/results/default_run_24bee46.md benchmarks/results/default_run_loaded_b995a9b.md benchmarks/results/default_run_loaded.md benchmarks/results/thread_policy.md benchmarks/results/thread_policy_siren_hr.md benchmarks/results/thread_policy_wait.md benchmarks/results/default_run_threads1.md benchmarks/results/neural_codec_speed.md benchmarks/results/neural_codec_roofline.md benchmarks/results/neural_codec_roofline_slow_day.md benchmarks/results/neural_codec_compile.md benchmarks/results/neural_codec_step_polyphase.md benchmarks/results/neural_codec_step_polyphase_loaded.md benchmarks/results/neural_codec_step_polyphase_backward.md benchmarks/results/network_refinement_speed.md benchmarks/results/network_refinement_speed_loaded.md benchmarks/results/neural_codec_memory_113x256x256.md benchmarks/results/neural_codec_memory_113x256x256_refined.md benchmarks/results/neural_codec_memory_300x512x512.md benchmarks/results/neural_codec_memory_300x512x512_train.md benchmarks/results/cpu.md benchmarks/results/cpu_agreement.md benchmarks/results/sr_cpu.md --codec-results benchmarks/results/suite_codecs_run/summary.md benchmarks/results/peer_comparison.md benchmarks/results/neural_codec_slice_refinement.md benchmarks/results/neural_codec_slice.md benchmarks/results/neural_codec_slice_10000_5dc720c.md benchmarks/results/neural_codec_slice_10000.md benchmarks/results/neural_codec_volume.md benchmarks/results/neural_codec_volume_10000.md benchmarks/results/neural_codec_real_ct_slab.md

# The CPU speed benchmarks committed under benchmarks/results/ (about 25 minutes on 2 cores):
# speed and roofline of every configuration and variant; agreement of our loop's PSNR with the
# reference loop's over 500 iterations; SRDenseNet training and inference.
bench: setup
	$(BIN)/volinr-dev bench --layers 2 3 4 --iterations 30 --variants default compiled bfloat16 --threads 2 --out-dir benchmarks/results --stem cpu
	$(BIN)/volinr-dev bench --layers 2 3 4 --iterations 500 --targets lr_slice_128x128 --threads 2 --out-dir benchmarks/results --stem cpu_agreement
	$(BIN)/volinr-dev bench-sr --steps 20 --patch 24 --batch 16 --slice-size 512 --checkpoint models/srdensenet-cpu.pt --threads 2 --out-dir benchmarks/results --stem sr_cpu

# Retrain the committed SR checkpoint with the workflow's own rule, then publish it.
pretrain-sr: setup
	$(SNAKEMAKE) --cores 2 --resources gpu=1 --configfile config/config.yaml config/pretrain_sr.yaml -- results/sr/srdensenet.pt

publish-sr: setup
	$(BIN)/volinr-dev publish-sr --checkpoint results/sr/srdensenet.pt --curve results/sr/training_curve.csv --log results/logs/pretrain_sr.log --out-dir models --name srdensenet-cpu
	@echo "now set sr.checkpoint_sha256 in config/config.yaml to the sha256 in models/srdensenet-cpu.json"

# Cool-chic's reference implementation, a benchmark-only peer (benchmarks/coolchic_peer.py), in
# its own environment from a local copy of its source; never a dependency of the package.
COOLCHIC_SRC ?= peers/Cool-Chic
peer:
	@test -f $(COOLCHIC_SRC)/cc_encode.py || { echo "COOLCHIC_SRC=$(COOLCHIC_SRC) holds no Cool-chic source"; exit 2; }
	mkdir -p peers
	[ "$(abspath $(COOLCHIC_SRC))" = "$(abspath peers/Cool-Chic)" ] || ln -sfn $(abspath $(COOLCHIC_SRC)) peers/Cool-Chic
	$(PYTHON) -m venv peers/coolchic-venv
	peers/coolchic-venv/bin/python -m pip install --quiet torch==2.13.0
	grep -vx torchvision $(COOLCHIC_SRC)/requirements.txt > peers/coolchic-requirements.txt
	peers/coolchic-venv/bin/python -m pip install --quiet -r peers/coolchic-requirements.txt torch==2.13.0

clean:
	rm -rf results/data results/sr results/fits results/rd results/export results/tables results/figures results/logs results/benchmarks results/summary.md results/report.html
