"""Serving under load: what the probe costs the server, and how fast the client can send.

1. **The probe's cost** (issue 27's target: under 2% of throughput at a fixed rate). The same
   load, a rate above what the server can answer so that it runs saturated, is sent to vLLM's
   server started with phasetime's probe and without it (the plugin then does nothing), in
   alternating order, ``--rounds`` times each. Throughput is output tokens per second over
   the load's duration (first send to last token). Printed: each round, the mean of each
   arm, and the probe's cost as the relative difference of the means.
2. **The client's capacity**. A scripted server streaming 4 tokens per request, 1 ms apart,
   on this host; open-loop Poisson loads at rising rates, one client process. Printed per
   rate: the median and p99 of the send lag (sent - planned), and whether the rate was held
   (median lag under a tenth of the mean gap between arrivals, the rule of
   ``phasetime.analysis.load``).

Run from the repository root with the main environment; the server runs from .venv-vllm:

    python benchmarks/serve.py                 # both
    python benchmarks/serve.py --only client   # the client alone (no vLLM needed)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from phasetime.serving import arrivals  # noqa: E402
from phasetime.serving.client import Load, Planned  # noqa: E402
from phasetime.serving.scripted import ScriptedServer  # noqa: E402


def throughput(url: str, model: str, rate: float, requests: int, tokens: int, seed: int) -> float:
    body = json.dumps({"model": model, "prompt": "Tell me a story about a cat.", "max_tokens": tokens,
                       "min_tokens": tokens, "ignore_eos": True, "temperature": 0.0, "stream": True,
                       "stream_options": {"include_usage": True, "continuous_usage_stats": True}}).encode()
    plan = [Planned(i, f"bench-{seed}-{i}", t, "/v1/completions", body)
            for i, t in enumerate(arrivals.plan(rate, "poisson", 1.0, seed, requests=requests))]
    with Load(url, plan) as load:
        records = [r for r in load.records() if r is not None]
    done = [r for r in records if r["error"] is None and r["chunks"]]
    span_s = (max(r["chunks"][-1] for r in done) - min(r["sent_ms"] for r in done)) / 1e3
    return sum(r["tokens"][-1] for r in done) / span_s


def probe_cost(rounds: int, rate: float, requests: int, tokens: int, model: str) -> None:
    from scipy import stats

    from phasetime.experiments.models.export import checkpoint_dir
    from phasetime.serving.join import read_records
    from phasetime.vllm.server import Server

    path = checkpoint_dir(model, 0)
    arms: dict[str, list[float]] = {"probe": [], "plain": []}
    steps: list[tuple[float, int]] = []
    with tempfile.TemporaryDirectory() as folder:
        with Server(path, model, Path(folder) / "cold", dtype="float32", probe=False):
            pass  # the first start reads the files cold: not a round
        for r in range(rounds):
            for arm in (("probe", "plain") if r % 2 == 0 else ("plain", "probe")):
                with Server(path, model, Path(folder) / f"{arm}{r}", dtype="float32", probe=arm == "probe") as server:
                    throughput(server.url, model, rate, 8, tokens, seed=1000 + r)  # warm-up
                    value = throughput(server.url, model, rate, requests, tokens, seed=r)
                    if arm == "probe":
                        steps += [(s.end_ms - s.start_ms, len(s.tokens)) for s in read_records(server.probe_dir).steps]
                arms[arm].append(value)
                print(f"round {r} {arm:5s}: {value:8.1f} output tokens/s", flush=True)
        width = int(np.median([n for _, n in steps]))
        write_ms = probe_step_ms(Path(folder) / "sink", width)
    ratios = np.array(arms["probe"]) / np.array(arms["plain"]) - 1  # paired by round (same moment of the machine)
    low, high = stats.t.interval(0.95, len(ratios) - 1, loc=ratios.mean(), scale=stats.sem(ratios)) if len(ratios) > 1 else (np.nan, np.nan)
    step_ms = float(np.median([d for d, _ in steps]))
    print(f"{model}, {requests} requests at {rate:g}/s, {tokens} tokens each, {rounds} rounds: with the probe "
          f"{np.mean(arms['probe']):.1f}, without {np.mean(arms['plain']):.1f} output tokens/s; the probe's change "
          f"{100 * ratios.mean():+.2f}% (95% interval over rounds {100 * low:+.1f}% .. {100 * high:+.1f}%)")
    print(f"the probe's own work in a step ({width} requests in it, its record written): {write_ms * 1e3:.1f} us "
          f"against a median step of {step_ms:.2f} ms ({100 * write_ms / step_ms:.2f}%)")


class _Runner:
    """A model runner whose four methods do nothing: what the probe adds to a step, alone."""

    device = None

    def execute_model(self, scheduler_output: object) -> None:
        return None

    def _execute_mm_encoder(self, *args: object) -> None:
        return None

    def _model_forward(self, *args: object) -> None:
        return None

    def sample_tokens(self, *args: object) -> None:
        return None


def probe_step_ms(folder: Path, width: int, steps: int = 20_000) -> float:
    """The probe's cost per engine step, in ms: a step of ``width`` decoding requests through
    the four hooked methods, with the probe (writing each step to a file, as the plugin does)
    and without, the same loop; the difference per step."""
    from types import SimpleNamespace

    from phasetime.vllm import worker_probe
    from phasetime.vllm.plugin import Sink

    order = SimpleNamespace(num_scheduled_tokens={f"cmpl-bench-{i}-0-abcdef12": 1 for i in range(width)},
                            scheduled_encoder_inputs={})

    def loop(runner: _Runner) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            runner.execute_model(order)
            runner._execute_mm_encoder()
            runner._model_forward()
            runner.sample_tokens()
        return (time.perf_counter() - start) * 1e3 / steps

    plain = _Runner()
    probed = _Runner()
    worker_probe.install(SimpleNamespace(model_runner=probed), Sink(folder).step)
    costs = [loop(probed) - loop(plain) for _ in range(5)]
    return float(np.median(costs))


def client_capacity(rates: list[float], seconds: float) -> None:
    server = ScriptedServer(0.001, 0.001)
    body = json.dumps({"max_tokens": 4}).encode()
    for rate in rates:
        plan = [Planned(i, f"c{i}", t, "/v1/completions", body)
                for i, t in enumerate(arrivals.plan(rate, "poisson", 1.0, 0, duration_s=seconds))]
        with Load(f"http://127.0.0.1:{server.port}", plan) as load:
            records = [r for r in load.records() if r is not None]
        lag = np.array([r["sent_ms"] - r["planned_ms"] for r in records])
        p10, p50, p90, p99 = np.percentile(lag, [10, 50, 90, 99])
        held = p90 - p10 <= 0.1 * 1e3 / rate
        failed = sum(r["error"] is not None for r in records)
        print(f"client at {rate:6g}/s: {len(records)} requests, send lag p10 {p10:.2f} / median {p50:.2f} / p90 "
              f"{p90:.2f} / p99 {p99:.2f} ms, {'held' if held else 'NOT held'}"
              + (f", {failed} failed" if failed else ""), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("probe", "client"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=40.0)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--model", default="tiny-llama-h32")
    parser.add_argument("--rates", default="50,100,200,400,800")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    if args.only != "probe":
        client_capacity([float(r) for r in args.rates.split(",")], args.seconds)
    if args.only != "client":
        probe_cost(args.rounds, args.rate, args.requests, args.tokens, args.model)


if __name__ == "__main__":
    main()
