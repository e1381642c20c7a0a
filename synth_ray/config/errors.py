"""The one error type of a bad config (schema, cross-references, overrides): everything in
`synth_ray.config` raises it, and nothing needs to import it lazily."""

from __future__ import annotations


class ConfigError(ValueError):
    """All problems of one config, each as 'key.path: message'."""

    def __init__(self, problems: list[str], source: str = "config"):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source} has {len(problems)} problem(s):\n{lines}")
