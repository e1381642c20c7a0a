"""Ray job entry point: stage `judge` (harmfulness, quality, danger zone, self-preference bias).

    ray job submit --address http://127.0.0.1:8265 --runtime-env jobs/runtime_env.yaml \
        -- python jobs/judge.py jobs/configs/paper-8b.yaml [key.sub=value ...]

Thin by design: parsing and calling synth_ray, nothing else.
"""

import sys

from synth_ray.cli import app

if __name__ == "__main__":
    app(['judge', *sys.argv[1:]], prog_name="synth-ray")
