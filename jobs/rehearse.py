"""Ray job entry point of a rehearsal (`synth-ray rehearse`): the config end to end on
stand-in models, on the cluster the job runs on.

    ray job submit --address http://127.0.0.1:8265 --runtime-env jobs/runtime_env.yaml \
        -- python jobs/rehearse.py jobs/configs/paper-8b.yaml run.dir=s3://BUCKET/rehearsal

Thin by design: parsing and calling synth_ray, nothing else.
"""

import sys

from synth_ray.cli import app

if __name__ == "__main__":
    app(["rehearse", *sys.argv[1:]], prog_name="synth-ray")
