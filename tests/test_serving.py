"""Serving under load, without a server: the arrivals, the client against a scripted server,
the join on hand-made step records, the clock offset, the device-event probe, the per-rate
summary and the load section's one-line refusals.

Truth from outside the code: distribution theory for the arrivals (an exponential gap has a
coefficient of variation of 1, a gamma gap of shape k one of 1/sqrt(k)), delays the scripted
server injects (a streamed gap can only be longer than the server's pause), and step records
written by hand with their phases counted by hand."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import run_cli

from phasetime.experiments.plan.spec import ExperimentError, parse_experiment
from phasetime.results.rows import rows_to_table
from phasetime.serving import arrivals
from phasetime.serving.client import Load, Planned, request
from phasetime.serving.scripted import ScriptedServer
from phasetime.serving.join import (JoinError, client_fields, clock_offset, find_request, parse_records, prompt_phases,
                                    request_measurement)
from phasetime.analysis.load import levels, load_warnings
from phasetime.vllm.worker_probe import _Events

pytestmark = pytest.mark.anyversion


# -- arrivals -----------------------------------------------------------------------------------

def test_constant_arrivals_are_evenly_spaced() -> None:
    assert arrivals.plan(4.0, "constant", 1.0, seed=0, requests=5) == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])


@pytest.mark.parametrize("arrival, shape, cv", [("poisson", 1.0, 1.0), ("gamma", 0.25, 2.0), ("gamma", 4.0, 0.5)])
def test_random_arrivals_have_the_rate_and_the_burstiness_of_their_law(arrival: str, shape: float, cv: float) -> None:
    times = np.array(arrivals.plan(10.0, arrival, shape, seed=1, requests=20_001))  # type: ignore[arg-type]
    gaps = np.diff(times)
    assert gaps.mean() == pytest.approx(0.1, rel=0.05)  # 10 requests/s
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.08)


def test_a_duration_holds_only_the_arrivals_within_it() -> None:
    times = arrivals.plan(50.0, "poisson", 1.0, seed=2, duration_s=4.0)
    assert times[0] == 0 and max(times) < 4.0 and 150 < len(times) < 250  # ~200 expected
    assert times == arrivals.plan(50.0, "poisson", 1.0, seed=2, duration_s=4.0)  # the seed fixes the plan


# -- the client against a scripted server -------------------------------------------------------

FIRST_S, GAP_S = 0.060, 0.015


@pytest.fixture(scope="module")
def scripted() -> ScriptedServer:
    """Streams the first token after FIRST_S, then one per GAP_S."""
    return ScriptedServer(FIRST_S, GAP_S)


def planned(index: int, tokens: int, offset: float = 0.0) -> Planned:
    return Planned(index, f"req-{index}", offset, "/v1/completions", json.dumps({"max_tokens": tokens}).encode())


def test_the_client_times_each_streamed_token_no_shorter_than_the_server_paused(scripted: ScriptedServer) -> None:
    record = asyncio.run(request("127.0.0.1", scripted.port, planned(0, 6), time.perf_counter() * 1e3))
    fields = client_fields(record, record["planned_ms"])
    assert record["error"] is None and fields["client_tokens"] == 6 and record["prompt_tokens"] == 7
    assert len(fields["client_itl_ms"]) == 5  # every chunk counts, empty text or not (bench serve's rule)
    # the server's pauses bound what the client sees from below: its first chunk cannot come
    # before FIRST_S, its last before FIRST_S + 5 GAP_S (one gap alone can read short: the
    # client may read the chunk before it late)
    assert fields["client_ttft_ms"] >= FIRST_S * 1e3
    assert fields["client_e2e_ms"] >= (FIRST_S + 5 * GAP_S) * 1e3
    assert fields["client_tpot_ms"] == pytest.approx(sum(fields["client_itl_ms"]) / 5)
    assert record["text"] == "xxx"


def test_a_refused_request_is_recorded_with_the_servers_message(scripted: ScriptedServer) -> None:
    record = asyncio.run(request("127.0.0.1", scripted.port, planned(1, 0), 0.0))
    assert record["error"] == "HTTP 400: max_tokens must be at least 1" and record["chunks"] == []


def test_the_load_sends_every_request_from_its_processes_not_before_its_moment(scripted: ScriptedServer) -> None:
    plan = [planned(i, 2, offset=0.05 * i) for i in range(8)]
    with Load(f"http://127.0.0.1:{scripted.port}", plan, clients=2) as load:
        records = [r for r in load.records() if r is not None]
    assert sorted(r["request_id"] for r in records) == [f"req-{i}" for i in range(8)]
    for r in records:
        assert r["sent_ms"] >= r["planned_ms"]  # a send can be late, never early
        assert r["error"] is None and r["tokens"][-1] == 2


def test_a_concurrency_cap_holds_requests_back_and_says_how_long(scripted: ScriptedServer) -> None:
    plan = [planned(i, 3) for i in range(3)]  # all planned at once, one slot
    with Load(f"http://127.0.0.1:{scripted.port}", plan, max_concurrency=1) as load:
        records = sorted((r for r in load.records() if r is not None), key=lambda r: r["sent_ms"])
    one = (FIRST_S + 2 * GAP_S) * 1e3  # a request's least duration
    # each is sent only once the one before it is answered
    assert records[1]["sent_ms"] - records[0]["sent_ms"] >= one and records[2]["sent_ms"] - records[1]["sent_ms"] >= one
    # and says it waited for that (it began waiting a moment after the first was sent: 10% slack)
    assert records[1]["slot_ms"] >= 0.9 * one and records[2]["slot_ms"] >= 0.9 * 2 * one


def test_leaving_a_load_early_stops_its_processes(scripted: ScriptedServer) -> None:
    plan = [planned(i, 3, offset=30.0) for i in range(2)]  # planned far ahead
    with Load(f"http://127.0.0.1:{scripted.port}", plan) as load:
        processes = list(load.processes)
    for p in processes:
        assert p.poll() is not None  # ended


# -- the join, on hand-made records ---------------------------------------------------------------

def step(start: float, end: float, forward: tuple[float, float], tokens: dict[str, int],
         encoder: list[tuple[float, float]] | None = None, images: dict[str, int] | None = None) -> str:
    return json.dumps({"kind": "step", "start_ms": start, "end_ms": end, "forward": forward, "tokens": tokens,
                       "encoder": encoder or [], "encoder_inputs": images or {}})


def front(rid: str, external: str, queued: float, first: float, last: float, prompt: int, n: int) -> str:
    return json.dumps({"kind": "request", "id": rid, "external_id": external, "prompt_tokens": prompt,
                       "output_tokens": n, "preemptions": 0, "queued_ms": queued,
                       "scheduled_ms": queued + 1, "first_token_ms": first, "last_token_ms": last,
                       "first_token_latency_ms": first - queued})


# A (10 prompt tokens, 3 outputs) alone in step 1; B (20 prompt tokens, with an image, 2 outputs)
# arrives and prefills beside A's first decode in step 2; both decode in step 3.
RECORDS = [
    json.dumps({"kind": "process", "host": "h", "pid": 1}),
    step(100, 110, (101, 109), {"A-x1": 10}),
    step(112, 130, (118, 128), {"A-x1": 1, "B-x2": 20}, encoder=[(113, 117)], images={"B-x2": 1}),
    step(131, 135, (132, 134), {"A-x1": 1, "B-x2": 1}),
    front("A-x1", "cmpl-A-0", 98, 110, 135, 10, 3),
    front("B-x2", "chatcmpl-B", 111, 130, 135, 20, 2),
    '{"kind": "step", "start_ms": 1',  # a torn last line (a process killed mid-write) is skipped
]


def client(request_id: str, sent: float, chunks: list[float]) -> dict[str, Any]:
    return {"index": 0, "request_id": request_id, "planned_ms": sent, "sent_ms": sent, "slot_ms": 0.0,
            "chunks": chunks, "tokens": list(range(1, len(chunks) + 1)), "prompt_tokens": None, "text": "", "error": None}


def test_the_join_splits_each_request_by_hand_count() -> None:
    records = parse_records(RECORDS)
    assert len(records.steps) == 3 and set(records.requests) == {"cmpl-A-0", "chatcmpl-B"}
    prefill = prompt_phases(records.steps, {"A-x1": 10, "B-x2": 20})
    assert prefill == [{"A-x1": 10}, {"B-x2": 20}, {}]
    a, extra_a = request_measurement(client("A", 95, [111, 131, 136]), records, 0.0, prefill)
    assert a.ttft_ms == pytest.approx(15)  # sent at 95, its first token sampled when step 1 ended at 110
    assert a.prefill_ms == pytest.approx(9)  # step 1's start to its forward's end, alone in it
    assert a.sequences[0].itl_ms == pytest.approx([20, 5])  # ready at 110, 130, 135
    assert extra_a["input_ms"] == pytest.approx(3) and extra_a["queue_ms"] == pytest.approx(2)
    # its first gap came out of step 2, shared with B's 20 prompt tokens and B's image
    assert extra_a["gap_requests"] == [1, 1] and extra_a["gap_prefill_tokens"] == [20, 0]
    assert extra_a["gap_encoder_inputs"] == [1, 0]
    b, extra_b = request_measurement(client("B", 110, [131, 136]), records, 0.0, prefill)
    # step 2: encoder 4 ms (B's alone: its one image); model time 128 - 112 - 4 = 12 ms split 20 : 1
    assert b.vision_ms == pytest.approx(4)
    assert b.prefill_ms == pytest.approx(12 * 20 / 21)
    assert b.ttft_ms == pytest.approx(20) and extra_b["gap_prefill_tokens"] == [0]
    assert extra_b["input_ms"] == pytest.approx(1) and extra_b["queue_ms"] == pytest.approx(1)


def test_a_request_the_server_never_saw_is_named() -> None:
    with pytest.raises(JoinError, match="request C: 0 of the server's requests match it"):
        find_request(parse_records(RECORDS), "C")


def test_the_clock_offset_between_hosts_is_measured_from_the_requests() -> None:
    truth = 5_000.0  # the server's clock reads 5 s ahead
    records = parse_records(RECORDS)
    pairs = [(client("A", 95 - truth, [111 - truth]), records.requests["cmpl-A-0"]),
             (client("B", 110 - truth, [131 - truth]), records.requests["chatcmpl-B"])]
    offset, half = clock_offset(pairs, same_host=False)
    assert offset - half <= truth <= offset + half and half <= 1.0  # bounded by 1 ms on both sides
    assert clock_offset(pairs, same_host=True) == (0.0, 0.0)


# -- the probe on an accelerator: one wait per step -------------------------------------------------

class FakeEvent:
    """A device event whose device time is set by the test's device clock."""

    def __init__(self, device: list[float]) -> None:
        self.device = device

    def record(self) -> None:
        self.at = self.device[0]

    def elapsed_time(self, other: "FakeEvent") -> float:
        return other.at - self.at


def test_device_events_place_each_boundary_with_one_wait_per_step() -> None:
    device = [0.0]
    host = [10.0]  # seconds; the host reads 10 s + device ms / 1e3 after each wait
    waits: list[int] = []

    def synchronize() -> None:
        waits.append(1)
        host[0] = 10.0 + device[0] / 1e3

    events = _Events(lambda: FakeEvent(device), synchronize, clock=lambda: host[0])
    step: dict[str, Any] = {"start_ms": events.mark(), "forward": None, "encoder": []}
    device[0] = 3.0
    a = events.mark()
    device[0] = 7.0
    step["forward"] = (a, events.mark())
    device[0] = 8.0
    end = events.settle(step)
    assert len(waits) == 1 and events.waits == 1
    assert end == pytest.approx(10_008.0)
    assert step["start_ms"] == pytest.approx(10_000.0) and step["forward"] == pytest.approx((10_003.0, 10_007.0))


# -- the per-rate summary ---------------------------------------------------------------------------

def level_rows(rate: float, ttfts: list[float], lag: float = 0.5) -> list[dict[str, Any]]:
    return [{"call_id": i, "repeat": 0, "sequence": 0, "model": "m", "backend": "vllm-server", "rate": rate,
             "sent_ms": 1000.0 * i / rate, "send_lag_ms": lag * (i % 2), "client_ttft_ms": t, "client_tpot_ms": 10.0,
             "client_e2e_ms": t + 90.0, "client_itl_ms": [10.0] * 9, "client_tokens": 10, "input_ms": 1.0,
             "queue_ms": 2.0, "vision_ms": 0.0, "prefill_ms": t - 5.0, "preemptions": 0}
            for i, t in enumerate(ttfts)]


def test_a_level_counts_its_throughput_goodput_and_ttft_parts_by_hand() -> None:
    table = rows_to_table(level_rows(2.0, [20.0, 40.0, 60.0, 200.0]))
    (level,) = levels(table, slo={"ttft_ms": 50.0, "tpot_ms": 20.0})
    # sends at 0, 0.5, 1.0, 1.5 s; the last ends 200 + 90 ms later: 1.79 s
    assert level.duration_s == pytest.approx(1.79)
    assert level.throughput_rps == pytest.approx(4 / 1.79) and level.tokens_per_s == pytest.approx(40 / 1.79)
    assert level.good == 2 and level.goodput_rps == pytest.approx(2 / 1.79)
    assert level.ttft_parts["queue_ms"] == 2.0 and level.ttft_parts["rest_ms"] == pytest.approx(5.0 - 3.0)
    # 4 values: the widest order-statistic interval [x1, x4] covers the median 87.5% of the
    # time (1 - 2 / 2**4), short of 95%: no interval; 8 values: [x1, x8] covers 99.2%
    p50 = level.quantiles["client_ttft_ms"][0]
    assert p50.value == 50.0 and p50.low is None and p50.high is None
    (eight,) = levels(rows_to_table(level_rows(2.0, [10.0 * k for k in range(1, 9)])))
    assert (eight.quantiles["client_ttft_ms"][0].low, eight.quantiles["client_ttft_ms"][0].high) == (10.0, 80.0)
    assert load_warnings(table) == []


def test_a_rate_the_client_did_not_hold_is_named() -> None:
    table = rows_to_table(level_rows(100.0, [20.0] * 5, lag=4.0))  # every other send 4 ms late: 10 ms gaps vary by 40%
    (line,) = load_warnings(table)
    assert line.startswith("m at 100/s: the client did not hold the rate (its send lag spread over 4.0 ms from p10 to p90")
    assert load_warnings(rows_to_table(level_rows(10.0, [20.0] * 5, lag=4.0))) == []  # against 100 ms gaps: held


# -- the load section's refusals ----------------------------------------------------------------------

BASE = {"name": "s", "backend": "vllm-server", "models": ["tiny-llama-h32"]}


@pytest.mark.parametrize("load, message", [
    ({"rates": [5000], "requests": 10}, "rate 5000/s is more than the client can send"),
    ({"rates": [1], "requests": 10, "duration_s": 5}, "give either requests (per rate) or duration_s"),
    ({"rates": [1], "requests": 10, "server": "http://h:8000"}, "server: URL needs probe_dir"),
    ({"rates": [1], "requests": 10, "server": "h:8000", "probe_dir": "p"}, "server must be an http://host:port URL"),
    ({"rates": [0], "requests": 10}, "greater than 0"),
])
def test_a_bad_load_is_one_line(load: dict[str, Any], message: str) -> None:
    with pytest.raises(ExperimentError) as err:
        parse_experiment({**BASE, "load": load})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_load_needs_its_backend_and_one_request_per_call() -> None:
    with pytest.raises(ExperimentError, match="backend vllm-server needs a load"):
        parse_experiment(BASE)
    with pytest.raises(ExperimentError, match="drop batch_size"):
        parse_experiment({**BASE, "load": {"rates": [1], "requests": 3}, "sweep": {"batch_size": [2]}})


def test_each_rate_is_a_cell_and_adding_one_keeps_the_others() -> None:
    from phasetime.experiments.plan.grid import expand

    two = expand(parse_experiment({**BASE, "load": {"rates": [1, 2], "requests": 3}}))
    three = expand(parse_experiment({**BASE, "load": {"rates": [1, 2, 4], "requests": 3}}))
    assert [c.params["rate"] for c in two] == [1, 2]
    assert {c.key for c in two} < {c.key for c in three}


def test_a_port_in_use_is_refused_before_anything_starts(tmp_path: Any) -> None:
    from phasetime.vllm.server import Server, ServerError

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = Server("model", "m", tmp_path, python="python3", port=port)
        with pytest.raises(ServerError, match=f"port {port} is in use"):
            server.start()
    assert server.process is None


def test_a_server_that_exits_at_once_is_one_line_with_its_error(tmp_path: Any) -> None:
    from phasetime.vllm.server import Server, ServerError

    fake = tmp_path / "python"  # a "vLLM" that cannot load the model
    fake.write_text("#!/bin/sh\necho 'INFO starting'\necho 'ValueError: no model at /nowhere' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(ServerError) as err:
        Server("/nowhere", "m", tmp_path / "server", python=str(fake)).start()
    assert str(err.value).startswith("the vLLM server exited (code 3) before it was healthy: ValueError: no model at /nowhere")


def test_rows_of_a_load_have_their_columns() -> None:
    table = rows_to_table(level_rows(1.0, [10.0]))
    assert isinstance(table, pa.Table) and table.column("rate").to_pylist() == [1.0]


def test_two_server_runs_compare_rate_by_rate_on_what_the_client_saw() -> None:
    from phasetime.analysis.compare import compare_runs

    a = rows_to_table(level_rows(2.0, [20.0 + k for k in range(12)]) + level_rows(8.0, [30.0 + k for k in range(12)]))
    b = rows_to_table(level_rows(2.0, [40.0 + 2 * k for k in range(12)]) + level_rows(8.0, [60.0 + 2 * k for k in range(12)]))
    keys, results = compare_runs(a, b)
    assert "rate" in keys
    ttft = {r.cell: r for r in results if r.phase == "client_ttft_ms"}
    assert ttft["rate=2.0"].ratio == pytest.approx(2.0) and ttft["rate=2.0"].verdict == "slower"
    assert ttft["rate=8.0"].ratio == pytest.approx(2.0) and ttft["geometric mean"].ratio == pytest.approx(2.0)


def test_phasetime_load_prints_each_level_and_refuses_a_run_without_one(tmp_path: Any) -> None:
    file = tmp_path / "load.parquet"
    pq.write_table(rows_to_table(level_rows(2.0, [20.0, 40.0, 60.0, 200.0])), file)
    out = run_cli("load", str(file), "--slo-ttft-ms", "50")
    assert out.exit_code == 0, out.output
    line = next(row for row in out.output.splitlines() if row.startswith("│ m "))
    # 4 requests over 1.79 s: 2.23 req/s and 22.3 tok/s; 2 of them within 50 ms TTFT: 1.12/s
    assert [cell.strip() for cell in line.strip("│").split("│")][:7] == ["m", "2", "4", "2.23", "22.3", "1.12", "50.00"]
    plain = tmp_path / "plain.parquet"
    pq.write_table(rows_to_table([{**row, "rate": None} for row in level_rows(2.0, [20.0])]), plain)
    refused = run_cli("load", str(plain))
    assert refused.exit_code == 2 and "holds no load: its rows have no rate" in " ".join(refused.output.split())


def test_each_request_asks_for_its_length_and_carries_its_own_image() -> None:
    import base64
    import io

    from PIL import Image

    from phasetime.experiments.data.datasets import Sample
    from phasetime.experiments.plan.grid import CellTask, expand
    from phasetime.experiments.running.backends.server import distinct, processor_of, request_body

    def task(model: str, output: str) -> CellTask:
        exp = parse_experiment({**BASE, "models": [model], "sweep": {"max_new_tokens": [12]},
                                "inputs": {"kind": "synthetic-vqa", "samples": 2},
                                "load": {"rates": [1], "requests": 2, "output": output}})
        return CellTask(expand(exp)[0], exp, [])

    sample = Sample("s0", "What colour is the square?", answers=("dark red",))
    text = processor_of("tiny-llama-h32", "", False)
    path, body = request_body(text, task("tiny-llama-h32", "fixed"), sample, [])
    assert path == "/v1/completions" and body["max_tokens"] == body["min_tokens"] == 12 and body["ignore_eos"]
    assert "What colour is the square?" in body["prompt"] and body["stream"] and body["temperature"] == 0.0
    tokens = text.tokenizer if hasattr(text, "tokenizer") else text
    _, data = request_body(text, task("tiny-llama-h32", "data"), sample, [])
    assert data["max_tokens"] == len(tokens("dark red", add_special_tokens=False)["input_ids"])
    image = Image.new("RGB", (40, 30), (10, 20, 30))
    one, two = distinct(image, "r-1"), distinct(image, "r-2")
    assert one.tobytes() != two.tobytes() and one.getpixel((5, 5)) == (10, 20, 30)  # one corner pixel differs
    vlm = processor_of("tiny-qwen2-vl-h32", "", False)
    path, body = request_body(vlm, task("tiny-qwen2-vl-h32", "fixed"), sample, [one])
    (content,) = [m["content"] for m in body["messages"]]
    url = content[0]["image_url"]["url"]
    sent = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert path == "/v1/chat/completions" and sent.size == (40, 30) and sent.tobytes() == one.tobytes()
    assert content[1] == {"type": "text", "text": "What colour is the square?"}


def test_overwrite_clears_a_servers_log_and_records_but_not_the_users_files(tmp_path: Any) -> None:
    from phasetime.results.directory import clear_ours

    (tmp_path / "server" / "m-probe").mkdir(parents=True)
    (tmp_path / "server" / "m.log").write_text("old run")
    (tmp_path / "notes.txt").write_text("mine")
    assert clear_ours(tmp_path) == ["notes.txt"] and not (tmp_path / "server").exists()


def test_levels_are_configurations_not_only_models_and_rates() -> None:
    """Two output lengths at one rate are two levels, named by what tells them apart (a grouping
    by model and rate alone pooled them)."""
    short = [{**r, "max_new_tokens": 8} for r in level_rows(2.0, [10.0] * 8)]
    long = [{**r, "max_new_tokens": 32, "call_id": 100 + r["call_id"]} for r in level_rows(2.0, [50.0] * 8)]
    table = rows_to_table(short + long)
    found = levels(table)
    assert [(lv.label, lv.requests, lv.quantiles["client_ttft_ms"][0].value) for lv in found] == [
        ("max_new_tokens=32", 8, 50.0), ("max_new_tokens=8", 8, 10.0)]
    assert sorted(found[0].rows) == list(range(8, 16))  # the rows it was read from
