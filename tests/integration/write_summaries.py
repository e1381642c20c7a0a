"""Helper run in a subprocess (Ray + vLLM): the sources of the config's self-preference
brackets summarise the articles through the real generation path (`generate_group` with
no training parts), for a run directory whose training sets were written by hand.

Usage: python write_summaries.py CONFIG RUN_DIR"""

import sys

if __name__ == "__main__":
    from synth_ray.config import load_config
    from synth_ray.design import summary_sources
    from synth_ray.engines.generation import engine_groups, generate_group
    from synth_ray.runtime.cluster import ensure_ray
    from synth_ray.runtime.pipeline import Context
    from synth_ray.runtime.rundir import RunDir
    from synth_ray.stages.generate import load_articles_once

    cfg = load_config(sys.argv[1], [f"run.dir={sys.argv[2]}"])
    ctx = Context(cfg, RunDir(cfg.run.dir))
    articles = load_articles_once(ctx)
    ensure_ray(cfg.resources)
    for group in engine_groups(cfg, summary_sources(cfg)):
        generate_group(ctx, group, {n: [] for n in group}, articles)
