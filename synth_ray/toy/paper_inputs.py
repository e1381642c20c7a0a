"""The paper configs' three input files, as samples in the layout of the real ones, made
from the bundled prompt sets: for checking a paper config end to end (`validate`, the
tests) where the real files are not at hand (jobs/configs/paper-8b.yaml names them).

- `refusalbench.json`: RefusalBench's own layout, one JSON object of category -> prompts;
- `jailbreak_prompts.csv`: the public "ChatGPT jailbreak prompts" table (Name, Prompt,
  Votes, Jailbreak Score, GPT-4), each prompt holding `[INSERT PROMPT HERE]`, with more
  votes than the authors' filter asks for;
- `cnn_dailymail_test_sample.jsonl`: CNN/DailyMail's fields (id, article, highlights).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from synth_ray.data.prompt_sets import AUTHORS_PLACEHOLDER, PLACEHOLDER
from synth_ray.toy.tiny import SAMPLE_FILES

# config key -> the file name the paper configs give it under data/
FILES = {"judge.safety_prompts": "refusalbench.json",
         "judge.jailbreak_templates": "jailbreak_prompts.csv",
         "judge.articles": "cnn_dailymail_test_sample.jsonl"}


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in SAMPLE_FILES[name].read_text().splitlines()
            if line.strip()]


def write_samples(folder: Path) -> dict[str, Path]:
    """Write the three files into `folder`; returns config key -> path (as overrides)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {key: folder / name for key, name in FILES.items()}
    categories: dict[str, list[str]] = {}
    for r in _rows("safety-prompts"):
        categories.setdefault(r["category"], []).append(r["prompt"])
    out["judge.safety_prompts"].write_text(json.dumps(categories, indent=1))
    with out["judge.jailbreak_templates"].open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Name", "Prompt", "Votes", "Jailbreak Score", "GPT-4"])
        for r in _rows("jailbreak-templates"):
            w.writerow([r["id"], r["template"].replace(PLACEHOLDER, AUTHORS_PLACEHOLDER), 42,
                        70, "Jailbroken"])
    with out["judge.articles"].open("w") as f:
        for r in _rows("articles"):
            f.write(json.dumps({"id": r["id"], "article": r["article"],
                                "highlights": r["highlights"]}) + "\n")
    return out
