"""Several sources start at once (generation.parallel_sources) and each loads its engine's
tokenizer in its own thread, in a driver that has not imported transformers yet. A bare
`from transformers import AutoTokenizer` in four threads at once fails there ("cannot
import name 'AutoTokenizer'", seen in a demo run); `engines.tokenizers.engine_tokenizer`
must not."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import json, threading
from synth_ray.engines.tokenizers import engine_tokenizer
from synth_ray.models import resolve_model
model = resolve_model("tiny://small-a")
errors, toks = [], []
start = threading.Barrier(4)
def load():
    start.wait()
    try:
        toks.append(engine_tokenizer(model))
    except Exception as e:
        errors.append(repr(e))
threads = [threading.Thread(target=load) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps({"errors": errors, "loaded": len(toks), "distinct": len({id(t) for t in toks}),
                  "vocab": toks[0].vocab_size if toks else 0}))
"""


def test_four_threads_load_the_tokenizer_in_a_fresh_process() -> None:
    from synth_ray.models import resolve_model

    resolve_model("tiny://small-a")  # build the model once, outside the timed threads
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["errors"] == []
    assert got["loaded"] == 4 and got["distinct"] == 1  # one load, shared
    assert got["vocab"] > 100
