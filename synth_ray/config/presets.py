"""Named presets: a config's `preset: NAME` fills every key the preset holds that the config
does not set itself (a config's own value, and an override, always win).

`paper`: the authors' method as their public code ran it (PAPER.md, "What the authors' code
does"; docs/paper.md lists each point with the test that pins it). What a preset cannot
know (sources, targets, cluster, file paths) stays in the config: jobs/configs/paper-8b.yaml
and paper-70b.yaml are `preset: paper` plus those.
"""

from __future__ import annotations

from typing import Any

PAPER: dict[str, Any] = {
    "dataset": {"drop_duplicate_instructions": False},  # all 15,011 rows, repeats kept
    "split": {"seed": 42, "test_fraction": 0.1, "num_parts": 4, "validation_fraction": 0.05,
              "method": "sklearn"},
    "generation": {"system_prompt": "You are a helpful assistant.",
                   "sampling": {"temperature": 0.7, "top_p": 0.9, "max_tokens": 1024,
                                "seed": 42},
                   "probe_prompts": 200},  # next check (a): a shared probe set
    "lora": {"r": 16, "alpha": 32, "dropout": 0.1, "bias": "none"},
    # every answer trains, as the authors' 13,509 rows did (a failed request has no text)
    "conditions": {"exclude": ["error"]},
    "training": {"system_prompt": "You are a helpful AI assistant.",  # their 8B training
                 "learning_rate": 5.0e-5, "scheduler": "cosine", "warmup_ratio": 0.03,
                 "weight_decay": 0.01, "epochs": 3, "seeds": [42], "max_length": 1024,
                 "loss_on": "all", "eval_every_steps": 20, "early_stopping_patience": 5},
    "evaluation": {"sampling": {"temperature": 0.7, "top_p": 0.9, "max_tokens": 1024},
                   "perplexity": {"end_of_turn": True, "outlier_rule": "tukey", "iqr_k": 1.5},
                   "semantic": "authors", "semantic_sentences": 5000,
                   "self_bleu": {"sentences": "punkt", "draw": "eligible",
                                 "individual_samples": 500, "aggregated_samples": 100}},
    "judge": {"jailbreak_design": "authors", "jailbreak_prompts_per_category": 5,
              "jailbreak_min_votes": 10, "decoding": "sampled", "preference_design": "authors",
              "sampling": {"temperature": 0.7, "top_p": 0.9, "max_tokens": 2048},
              "quality_max": 5, "max_articles": 100, "summary_max_tokens": 1024,
              "article_sample": "authors", "safety_rows": "authors"},
}
PRESETS = {"paper": PAPER}


def _under(preset: Any, data: Any) -> Any:
    """data over preset, mapping by mapping; data's own values (lists too) win."""
    if isinstance(preset, dict) and isinstance(data, dict):
        out = dict(preset)
        for k, v in data.items():
            out[k] = _under(preset.get(k), v) if k in preset else v
        return out
    return data


def apply_preset(data: dict[str, Any]) -> dict[str, Any]:
    """The config with its preset's keys filled in; an unknown name is left for the schema
    to report (with the known names)."""
    name = data.get("preset")
    if name not in PRESETS:
        return data
    return _under(PRESETS[name], data)
