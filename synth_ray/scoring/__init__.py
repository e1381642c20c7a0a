"""What the `score` stage computes between reading its inputs and writing its outputs
(PAPER.md, Evaluation 1-3), the maths itself in `metrics/`:

- `perplexity.py`: the perplexity requests (each condition's test outputs and the human
  test responses, tokenised as the engine scores them) and their summaries and tests.
- `diversity.py`: the authors' notebook draws (one stream per bracket and seed, as Ray
  tasks), merged into the per-condition rows, and the semantic tests on their distances.
- `summary.py`: summary.json's tables.
"""
