"""The LLM judging of the study's two judged evaluations (PAPER.md, Evaluation 4-5), what the
`judge` stage calls between reading its inputs and writing its outputs:

- `harm_quality.py`: safety. The judge model's requests (harmfulness 1-5, quality
  1-`judge.quality_max`), its answers read with the parsers of `metrics/judging.py`, the
  authors' quality-removal rule and the danger column, one row per safety response.
- `self_preference.py`: the target picks the better of two summaries of one article; the
  pairs, in both orders, and the self-preference bias per adapter (`metrics/spb.py`).
- `conditions.py`: which condition and seed each judged adapter belongs to.

No engine starts here: the stage runs the judge and the target; these build what is sent
and read what comes back.
"""
