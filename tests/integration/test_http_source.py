"""An HTTP source: a real vLLM OpenAI-compatible server on 127.0.0.1 serving a tiny model,
reached through a local proxy that injects 429/502/503s, 500s and timeouts. Every row ends
answered or with a recorded error, none lost or doubled; the API key never reaches a file."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
import urllib.request

import polars as pl
import pytest
from aiohttp import ClientSession, ClientTimeout, web

from synth_ray import models

from .helpers import cli_env, fault_rng, free_port, run_cli, small_config

pytestmark = pytest.mark.slow
SECRET = "sk-test-0123456789-do-not-log"


RETRIED = ("429", "502", "503", "timeout", "truncated")


def random_schedule(name: str, n: int, faults: tuple[str, ...]) -> dict[int, str]:
    """Requests 1..n fail at a rate drawn from [10%, 30%], each with a fault drawn from
    `faults`; seeded and printed (tests.integration.helpers.fault_rng)."""
    rng = fault_rng(name)
    rate = rng.uniform(0.10, 0.30)
    schedule = {i: rng.choice(faults) for i in range(1, n + 1) if rng.random() < rate}
    print(f"{name}: fault rate {rate:.0%}, {len(schedule)} faults in the first {n} requests")
    return schedule


def check_accounting(proxy: FaultProxy, rows: pl.DataFrame, max_retries: int,
                     resent: int) -> None:
    """Each request the proxy saw was answered (one answer per distinct request content:
    rows with the same content share it), failed with a 500 (an error row, not retried) or
    hit a retried fault; a row whose retries ran out fails its block, whose rows are sent
    again (`resent`, generation.block_retries) or become error rows."""
    ok = rows.filter(pl.col("status") != "error")
    errors = rows.filter(pl.col("status") == "error")
    server = errors.filter(pl.col("error").str.contains("injected server error"))
    if resent == 0:
        # each 500 is one failed request: the error rows of its content (rows that share
        # a prompt share its answer, or its failure)
        assert server["gen_key"].n_unique() == proxy.served.get("500", 0)
    else:  # a 500 in a failed block was sent again and may have been answered then
        assert server["gen_key"].n_unique() <= proxy.served.get("500", 0)
    if resent == 0 and errors.height == server.height:  # no retry budget ran out
        assert proxy.served.get("ok", 0) == ok["gen_key"].n_unique()  # none lost or doubled
    else:  # the answered rows of a failed block were lost with it, and maybe sent again
        assert proxy.served.get("ok", 0) >= ok["gen_key"].n_unique()
    budget = (rows["gen_key"].n_unique() + resent) * (max_retries + 1)
    assert proxy.count <= budget
    faulted = proxy.count - proxy.served.get("ok", 0)
    print(f"http faults: {proxy.count} requests, {faulted} faulted "
          f"({faulted / proxy.count:.0%}); {rows.height} rows: {ok.height} answered, "
          f"{errors.height} error rows ({server.height} from 500s), {resent} sent again "
          "after a failed block, 0 lost")


class FaultProxy:
    """Forwards /v1/chat/completions; request n gets the fault `schedule[n]` if any."""

    def __init__(self, upstream: str, schedule: dict[int, str], max_retries: int = 4):
        self.upstream, self.schedule = upstream, schedule
        self.count = 0
        self.served: dict[str, int] = {}
        self.port = free_port()
        # "exhaust": this request's content gets a 503 on every one of its attempts, so
        # its retries run out and its block fails; once sent again it is answered
        self.attempts = max_retries + 1
        self.poisoned: dict[bytes, int] = {}

    async def handle(self, request: web.Request) -> web.Response:
        self.count += 1
        body = await request.read()
        fault = self.schedule.get(self.count, "ok")
        if fault == "exhaust":
            self.poisoned[body] = self.attempts
        if self.poisoned.get(body, 0) > 0:
            self.poisoned[body] -= 1
            fault = "exhaust"
        self.served[fault] = self.served.get(fault, 0) + 1
        if fault == "exhaust":
            return web.json_response({"error": {"message": "injected"}}, status=503)
        if fault in ("429", "502", "503"):
            return web.json_response({"error": {"message": "injected"}}, status=int(fault),
                                     headers={"Retry-After": "0"})
        if fault == "500":
            return web.json_response({"error": {"message": "injected server error"}},
                                     status=500)
        if fault == "timeout":
            await asyncio.sleep(6)
        headers = {"Authorization": request.headers.get("Authorization", ""),
                   "Content-Type": "application/json"}
        async with ClientSession(timeout=ClientTimeout(total=60)) as s:
            async with s.post(self.upstream + "/v1/chat/completions", data=body,
                              headers=headers) as r:
                answer = await r.read()
                if fault == "truncated":  # promise the whole body, send half, hang up
                    resp = web.StreamResponse(status=r.status, headers={
                        "Content-Type": "application/json",
                        "Content-Length": str(len(answer))})
                    await resp.prepare(request)
                    await resp.write(answer[: len(answer) // 2])
                    request.transport.close()
                    return resp
                return web.Response(body=answer, status=r.status,
                                    content_type="application/json")

    def start(self) -> None:
        loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.handle)
        runner = web.AppRunner(app)

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
            loop.run_forever()

        threading.Thread(target=serve, daemon=True).start()


@pytest.fixture(scope="module")
def vllm_server():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server",
         "--model", models.resolve_model("tiny://small-c"), "--served-model-name", "tiny-c",
         "--host", "127.0.0.1", "--port", str(port), "--api-key", SECRET,
         "--dtype", "float32", "--max-model-len", "1024"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=cli_env(),
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while time.time() < deadline:
        assert proc.poll() is None, "vLLM server exited during start"
        try:
            urllib.request.urlopen(url + "/health", timeout=2)
            break
        except OSError:
            time.sleep(1)
    else:
        proc.kill()
        pytest.fail("vLLM server did not become ready in 300 s")
    yield url
    proc.terminate()
    proc.wait(timeout=60)


def http_config(tmp_path, proxy_port: int):
    source = {"name": "api-c", "model": "tiny-c", "bracket": "api", "backend": "http",
              "http": {"base_url": f"http://127.0.0.1:{proxy_port}/v1",
                       "api_key_env": "SYNTH_TEST_API_KEY", "max_retries": 4,
                       "base_retry_wait_s": 0.05, "timeout_s": 3,
                       "usd_per_million_input": 2.5, "usd_per_million_output": 10.0}}
    return small_config(
        tmp_path, sources=[source],
        conditions={"human": True, "single_source": {"api": "api-c"},
                    "multi_source": {"api": ["api-c"] * 4}, "exclude": ["empty", "error"]},
    )


def test_http_source_under_faults(vllm_server, tmp_path) -> None:
    # the fixed faults first (each kind seen at least once), then random ones at 10-30%
    schedule = {3: "503", 5: "500", 8: "timeout", 11: "502", 14: "truncated", 17: "429",
                19: "exhaust"}
    schedule.update({i + 20: f for i, f in random_schedule(
        "http source", 60, ("429", "500", "502", "503", "truncated")).items()})
    proxy = FaultProxy(vllm_server, schedule)
    proxy.start()
    cfg = http_config(tmp_path, proxy.port)
    run_dir = tmp_path / "run"
    env = cli_env(SYNTH_TEST_API_KEY=SECRET)
    proc = run_cli("run", str(cfg), f"run.dir={run_dir}", "--until", "build", env=env,
                   timeout=900)
    assert proc.returncode == 0, proc.stderr[-5000:]
    gen = pl.read_parquet(run_dir / "generations" / "api-c.parquet")
    n_test = pl.read_parquet(run_dir / "splits" / "test.parquet").height
    assert gen.height == 48 - n_test  # every training row once (max_rows=48)
    assert gen.select("id", "part").n_unique() == gen.height
    errors = gen.filter(pl.col("status") == "error")
    # each 500 (not retried) is one error row; 429/502/503, timeouts and cut bodies were
    # retried (a row whose 4 retries all fail is an error row too)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    resent = manifest["stages"]["generate"]["sources"]["api-c"]["resent"]
    # the exhausted request failed its block; its rows were sent again, not lost
    assert proxy.served["exhaust"] == 5 and resent >= 1
    check_accounting(proxy, gen, 4, resent)
    assert proxy.served["500"] >= 1
    assert proxy.served["timeout"] == 1 and proxy.served["truncated"] >= 1
    ok = gen.filter(pl.col("status") != "error")
    assert (ok["completion_tokens"] > 0).all() and ok["finish_reason"].is_in(
        ["stop", "length"]).all()
    assert (ok["latency_s"] > 0).all()

    # a rerun sends only the failed rows again; the proxy is healthy now
    before = proxy.count
    proxy.schedule = {}
    proc = run_cli("generate", str(cfg), f"run.dir={run_dir}", "--force", env=env)
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert proxy.count - before == errors.height
    again = pl.read_parquet(run_dir / "generations" / "api-c.parquet")
    assert again.height == gen.height and (again["status"] != "error").all()

    # what the endpoint was sent, priced: the report's spend from the manifest's counts
    # equals the kept answers' own token counts at the config's prices
    from synth_ray.config import load_config
    from synth_ray.report.cost import api_spend
    from synth_ray.runtime.pipeline import Context
    from synth_ray.runtime.rundir import RunDir

    recorded = json.loads((run_dir / "manifest.json").read_text())["stages"]
    ctx = Context(load_config(run_dir / "config.yaml"), RunDir(run_dir, None))
    (name, pt, ct, usd), = api_spend(ctx, recorded)
    assert (name, pt, ct) == ("source api-c", again["prompt_tokens"].sum(),
                              again["completion_tokens"].sum()) and pt > 0 and ct > 0
    assert usd == pytest.approx(pt * 2.5e-6 + ct * 10e-6)

    # the key is never written anywhere in the run directory, nor printed
    for f in run_dir.rglob("*"):
        if f.is_file():
            assert SECRET.encode() not in f.read_bytes(), f
    assert SECRET not in proc.stdout + proc.stderr


def test_missing_api_key_is_a_clear_error_before_any_request(tmp_path) -> None:
    proxy_port = free_port()  # nothing listens: no request may be sent
    cfg = http_config(tmp_path, proxy_port)
    run_dir = tmp_path / "run"
    assert run_cli("split", str(cfg), f"run.dir={run_dir}").returncode == 0
    proc = run_cli("generate", str(cfg), f"run.dir={run_dir}")
    assert proc.returncode == 1
    assert "SYNTH_TEST_API_KEY" in proc.stderr and "is not set" in proc.stderr
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["stages"]["generate"]["status"] == "failed"


def test_http_judge_keeps_unparsable_answers_and_counts_them(vllm_server, grid_run,
                                                             tmp_path) -> None:
    """An OpenAI-compatible judge (free text, no constrained decoding) behind the fault
    proxy: every response gets its judgement row; an answer that does not parse keeps its
    raw text and is counted, a failed call is recorded, nothing is guessed or lost."""
    import shutil

    import yaml

    from .helpers import JUDGE

    cfg0, run0 = grid_run
    proc = run_cli("respond", str(cfg0), f"run.dir={run0}", timeout=1200)
    assert proc.returncode == 0, proc.stderr[-5000:]
    run_dir = tmp_path / "run"
    shutil.copytree(run0, run_dir)
    for f in (run_dir / "judge").glob("*/*"):  # outputs of an earlier judge, if any
        if f.name in ("judgements.parquet", "danger_zone.parquet", "pairs.parquet",
                      "spb.parquet", "judge_summary.json"):
            f.unlink()
    schedule = {2: "429", 4: "500", 7: "timeout", 9: "502", 12: "truncated", 14: "exhaust"}
    schedule.update({i + 15: f for i, f in random_schedule(
        "http judge", 150, ("429", "500", "502", "503", "truncated")).items()})
    proxy = FaultProxy(vllm_server, schedule)
    proxy.start()
    data = yaml.safe_load(cfg0.read_text())
    data["judge"] = {**JUDGE, "backend": "http", "model": "tiny-c",
                     "sampling": {"temperature": 0.0, "top_p": 1.0, "max_tokens": 24},
                     "http": {"base_url": f"http://127.0.0.1:{proxy.port}/v1",
                              "api_key_env": "SYNTH_TEST_API_KEY", "max_retries": 4,
                              "base_retry_wait_s": 0.05, "timeout_s": 3}}
    data["targets"] = [{**t, "self_source": None} for t in data["targets"]]
    cfg = tmp_path / "judge.yaml"
    cfg.write_text(yaml.safe_dump(data))
    proc = run_cli("judge", str(cfg), f"run.dir={run_dir}",
                   env=cli_env(SYNTH_TEST_API_KEY=SECRET), timeout=900)
    assert proc.returncode == 0, proc.stderr[-5000:]
    base = run_dir / "judge" / "tiny-target"
    table = pl.read_parquet(base / "judgements.parquet")
    safety = pl.read_parquet(run_dir / "responses" / "tiny-target" / "safety.parquet")
    assert table.height == safety.height == 4 * 12
    summary = json.loads((base / "judge_summary.json").read_text())
    for kind in ("harm", "quality"):
        failed = table.filter(pl.col(kind).is_null())
        assert (failed[f"{kind}_error"] != "").all() and (failed[f"{kind}_raw"].is_not_null()
                                                         ).all()
        assert table.filter(pl.col(kind).is_not_null())[kind].is_between(1, 5).all()
    answers = pl.read_parquet(run_dir / "judge" / "tiny-target" / "raw.parquet")
    assert answers["id"].n_unique() == answers.height  # none doubled
    from synth_ray.metrics.judging import parse_score

    unparsable = sum(summary["judge"][k]["unparsable"] for k in ("harm", "quality"))
    assert unparsable == sum(r["status"] == "error" or parse_score(r["response"], 5).score is None
                             for r in answers.iter_rows(named=True))
    assert unparsable >= table["harm"].null_count() + table["quality"].null_count()
    assert proxy.served["exhaust"] == 5 and summary["calls"]["resent"] >= 1
    check_accounting(proxy, answers, 4, summary["calls"]["resent"])
    assert proxy.served["500"] >= 1
    assert proxy.served["timeout"] == 1 and proxy.served["truncated"] >= 1  # both retried
    assert not (base / "spb.parquet").exists()  # no self source: no SPB
    for f in run_dir.rglob("*"):
        if f.is_file():
            assert SECRET.encode() not in f.read_bytes(), f
    assert SECRET not in proc.stdout + proc.stderr
