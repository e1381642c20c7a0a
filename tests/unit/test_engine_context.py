"""An engine's context window (`generation.max_model_len`): a number, or "model", each
model's own window. The paper configs use "model", so a long-context Dolly row that a
fixed 4,096 would refuse reaches a model whose window holds it; the prompt check on the driver
and the number vLLM is given are one figure."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest

from synth_ray.config import load_config
from synth_ray.engines.answering import EngineWindow, chat_prompts
from synth_ray.engines.layout import EngineRun, EngineSpec
from synth_ray.engines.processors import _engine_kwargs
from synth_ray.engines.tokenizers import model_window
from synth_ray.models import resolve_model

REPO = Path(__file__).resolve().parents[2]
PAPER = [REPO / "jobs" / "configs" / f"paper-{t}.yaml" for t in ("8b", "70b")]


def with_window(tmp_path: Path, name: str, window: int) -> Path:
    """The embedded target's folder (tokenizer, chat template, Llama config) with another
    `max_position_embeddings`: a stand-in for a hub model of that window."""
    folder = tmp_path / name
    shutil.copytree(resolve_model("tiny://target"), folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config,
                                                    "max_position_embeddings": window}))
    return folder


def long_row(tokens: int) -> pl.DataFrame:
    """One request of about `tokens` tokens with the chat template: an instruction and a
    long CONTEXT block, as a Dolly row with a Wikipedia passage is asked."""
    words = " ".join(f"w{i % 97}" for i in range(tokens))
    msgs = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": f"Summarise the passage.\n\nCONTEXT:\n{words}"}]
    return pl.DataFrame({"gen_key": ["k"], "messages": [json.dumps(msgs)]})


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.stem)
def test_paper_configs_give_each_engine_its_models_own_window(tmp_path, path) -> None:
    cfg = load_config(path)
    assert cfg.generation.max_model_len == "model"
    llama = with_window(tmp_path, "llama-3.1", 131072)
    for s in cfg.sources:
        if s.backend == "http":
            continue
        spec = replace(EngineSpec.of_source(s), model=str(llama))
        window = EngineWindow.of(cfg.generation, spec)
        assert window.max_model_len == 131072, s.name
        # what vLLM is given is what the driver checked prompts against
        assert _engine_kwargs(EngineRun.of(cfg), spec, gpu=True)["max_model_len"] == 131072, s.name


def test_a_long_context_row_fits_the_models_window_not_a_fixed_4096(tmp_path) -> None:
    cfg = load_config(PAPER[0])
    spec = replace(EngineSpec.of_source(cfg.source("llama-3.1-8b")),
                   model=str(with_window(tmp_path, "llama-3.1", 131072)))
    row = long_row(6000)  # a long-context row: with a 1,024-token answer, past 4,096
    prompts, refused = chat_prompts(row, EngineWindow.of(cfg.generation, spec))
    assert list(prompts) == ["k"] and refused == {}
    fixed = load_config(PAPER[0], ["generation.max_model_len=4096"])
    prompts, refused = chat_prompts(row, EngineWindow.of(fixed.generation, spec))
    assert prompts == {} and "the engine's context is 4096" in refused["k"]


def test_the_window_caps_the_context_and_a_section_number_wins(tmp_path) -> None:
    cfg = load_config(PAPER[0])
    gemma = replace(EngineSpec.of_source(cfg.source("gemma-2-9b")),
                    model=str(with_window(tmp_path, "gemma-2", 8192)))
    _, refused = chat_prompts(long_row(9000), EngineWindow.of(cfg.generation, gemma))
    assert "the engine's context is 8192" in refused["k"]  # past the model's own window
    # a model section's own number is that engine's context, "model" elsewhere
    own = replace(gemma, engine_kwargs={**gemma.engine_kwargs, "max_model_len": 2048})
    assert EngineWindow.of(cfg.generation, own).max_model_len == 2048
    assert _engine_kwargs(EngineRun.of(cfg), own, gpu=True)["max_model_len"] == 2048


def test_a_model_without_a_stated_window_is_a_clear_error(tmp_path) -> None:
    folder = tmp_path / "t5"  # relative positions: no window in its config
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "t5"}))
    with pytest.raises(ValueError, match="set generation.max_model_len"):
        model_window(str(folder))


def test_max_model_len_takes_a_number_or_model_only() -> None:
    with pytest.raises(Exception, match="generation.max_model_len"):
        load_config(PAPER[0], ["generation.max_model_len=auto"])
    assert load_config(PAPER[0], ["generation.max_model_len=8192"]).generation \
        .max_model_len == 8192
