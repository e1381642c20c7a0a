"""Sources and judges behind an OpenAI-compatible chat API, through ray.data.llm's HTTP
request stage (qps, retries of 408/429/5xx and connection errors, concurrency): the same
request rows in and the same answer rows out as the vLLM processors, so generation and the
judge treat both backends alike. A 4xx/5xx that is not retried is an answer row holding the
error, never a lost row. The API key is read from the environment at run time, never stored.
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any

from synth_ray.config import HttpSection, SamplingSection
from synth_ray.engines.processors import LIGHT, _finish, _row_sampling, light_map


def _http_pre(row: dict[str, Any], sampling: dict[str, Any], model: str) -> dict[str, Any]:
    sampling = _row_sampling(row, sampling)
    payload = {"model": model, "messages": json.loads(row["messages_json"]),
               "temperature": sampling["temperature"], "top_p": sampling["top_p"],
               "max_tokens": sampling["max_tokens"]}  # fmt: skip
    if row.get("seed") is not None:
        payload["seed"] = int(row["seed"])
    return {**row, "payload": payload, "sent_at": time.time()}


def _http_post(row: dict[str, Any]) -> dict[str, Any]:
    resp = row.get("http_response") or {}
    latency = time.time() - row["sent_at"] if row.get("sent_at") else None
    choices = resp.get("choices") if isinstance(resp, dict) else None
    if not choices:
        # A 4xx/5xx that is not retried comes back as a row holding the error body.
        detail = resp.get("error", resp) if isinstance(resp, dict) else resp
        return _finish(row, "", 0, 0, "", latency,
                       f"HTTP error: {json.dumps(detail, default=str)[:500]}")
    choice = choices[0]
    usage = resp.get("usage") or {}
    text = (choice.get("message") or {}).get("content") or ""
    return _finish(row, text, usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0),
                   choice.get("finish_reason") or "", latency, "")


def _session_factory(timeout_s: float):
    import aiohttp

    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s))


def api_key(http: HttpSection | None, who: str) -> str | None:
    """The API key named by `http.api_key_env`, read now; `who` names the config key."""
    env = http.api_key_env if http else None
    if not env:
        return None
    key = os.environ.get(env)
    if not key:
        raise RuntimeError(
            f"{who}: environment variable {env} (its http.api_key_env) is not set; export it "
            "before running"
        )
    return key


def http_processor(http: HttpSection | None, model: str, sampling: SamplingSection,
                   who: str):
    """An OpenAI-compatible chat endpoint: a source (`who`: "source 'x'") or the judge."""
    from ray.data.llm import HttpRequestProcessorConfig, build_processor

    assert http is not None  # checked by the config
    key = api_key(http, who)
    config = HttpRequestProcessorConfig(
        url=http.base_url.rstrip("/") + "/chat/completions",
        headers={"Authorization": f"Bearer {key}"} if key else None,
        qps=http.qps,
        max_retries=http.max_retries,
        base_retry_wait_time_in_s=http.base_retry_wait_s,
        concurrency=http.concurrency,
        batch_size=http.batch_size,
        session_factory=functools.partial(_session_factory, http.timeout_s),
        http_request_stage=LIGHT,
    )
    return build_processor(
        config,
        preprocess=functools.partial(_http_pre, sampling=sampling.model_dump(), model=model),
        postprocess=_http_post,
        # one task at a time each side of the HTTP stage's own pool (light_map)
        preprocess_map_kwargs=light_map(1),
        postprocess_map_kwargs=light_map(1),
    )
