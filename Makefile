# The two commands of the README: `make demo` and `make test`. Both set up .venv first.
.PHONY: setup demo smol test lint bench gpu-check clean-demo

setup:
	@bash scripts/setup.sh

demo: setup
	@.venv/bin/synth-ray run jobs/configs/demo.yaml $(ARGS)

# The paper's design in miniature on a real chat model (SmolLM2-135M-Instruct); its wall
# time on 2 cores is in docs/benchmarks.md.
smol: setup
	@.venv/bin/synth-ray run jobs/configs/smol.yaml $(ARGS)

test: setup
	@bash scripts/test.sh $(ARGS)

lint: setup
	@.venv/bin/ruff check .

# Speed figures for docs/benchmarks.md (minutes; each prints ratios against its baseline).
bench: setup
	@for b in generation_throughput train_throughput self_bleu_speed perplexity_speed; do \
	  echo "== $$b"; .venv/bin/python benchmarks/$$b.py || exit 1; done
	@.venv/bin/synth-ray plan jobs/configs/paper-8b.yaml  # expected GPU-hours, on paper

# Every GPU check in one command (scripts/gpu_check.py): one JSON of figures under $(OUT) or
# runs/gpu-check; on a machine without CUDA it says what it skipped and why.
gpu-check: setup
	@.venv/bin/python scripts/gpu_check.py $(ARGS)

clean-demo:
	rm -rf runs/demo
