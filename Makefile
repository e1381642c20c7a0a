# The two commands of the README: `make demo` and `make test`. Both set up .venv first.
.PHONY: setup demo test lint bench clean-demo

setup:
	@bash scripts/setup.sh

# Exit code 3 means the pipeline stopped at a stage this version does not build yet
# (it says which); the stages before it ran for real.
demo: setup
	@.venv/bin/synth-ray run jobs/configs/demo.yaml $(ARGS) || [ $$? -eq 3 ]

test: setup
	@bash scripts/test.sh $(ARGS)

lint: setup
	@.venv/bin/ruff check .

clean-demo:
	rm -rf runs/demo
