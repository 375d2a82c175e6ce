"""The vllm-server backend: a cell is one rate level of a load sent to a real vLLM server.

:meth:`ServerBackend.load` starts vLLM's OpenAI server with phasetime's probe
(:class:`phasetime.vllm.server.Server`, kept while the cells of one model run) or attaches to
``load.server``. :meth:`ServerBackend.measure` sends the experiment's ``warmup`` requests one
at a time (not stored; they also prove the probe is there), then each repeat sends the
level's planned arrivals from the client processes (:mod:`phasetime.serving.client`) and
joins every answer with the server's records (:mod:`phasetime.serving.join`): one row per
request. A request the server answered with an error is a failed sample of the cell.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import time
import uuid
import zlib
from pathlib import Path
from typing import Any, Callable

from ....results.files import SERVER_DIR
from ....results.rows import measurement_rows, rows_to_table
from ....serving import arrivals
from ....serving.client import Load, Planned
from ....serving.join import (JoinError, ServerRecords, clock_offset, client_fields, find_request, prompt_phases,
                              read_records, request_measurement)
from ....vllm.server import Server, ServerError, healthy, platform
from ...data.batch import add_prediction, sample_fields
from ...data.datasets import format_question
from ...data.inputs import chat_prompt, tokenizer_of
from ...models import is_vision_language
from ...models.export import checkpoint_dir
from ...plan.grid import CellTask
from . import Steps, row_params
from .hf import _images


class ServerBackend:
    """Keeps one server (the last model's) between cells."""

    name = "vllm-server"

    def __init__(self) -> None:
        self._key: tuple[Any, ...] | None = None
        self._server: Server | None = None
        self._url = ""
        self._probe_dir = Path()
        self._processor: Any = None
        self._device = ""
        self._run = uuid.uuid4().hex[:8]  # request ids unique to this process's run

    def release(self) -> None:
        server, self._server, self._key = self._server, None, None
        if server is not None:
            server.stop()

    def load(self, task: CellTask, on_load: Callable[[str], None] | None = None) -> str:
        cell, experiment = task.cell, task.experiment
        load = experiment.load
        assert load is not None
        if self._key == cell.load_key:
            return self._device
        self.release()
        if on_load is not None:
            on_load(cell.model.name)
        path = checkpoint_dir(cell.model.name, experiment.seed)
        self._processor = processor_of(cell.model.name, path, cell.model.trust_remote_code)
        if load.server is not None:
            if not healthy(load.server, timeout=5.0):
                raise ServerError(f"no vLLM server answers at {load.server}/health")
            self._url, self._probe_dir, self._device = load.server, Path(load.probe_dir or "."), "server"
        else:
            where = platform(load.python)
            folder = Path(task.out_dir or ".") / SERVER_DIR
            args = engine_flags(experiment.engine_args) + list(load.server_args)
            self._server = Server(path, cell.model.name, folder, python=load.python, port=load.port,
                                  dtype=cell.params["dtype"], seed=experiment.seed, args=args,
                                  startup_timeout_s=load.startup_timeout_s, eager=where == "cpu").start()
            self._url, self._probe_dir = self._server.url, self._server.probe_dir
            self._device = "cpu" if where == "cpu" else f"{where}:0"
        self._key = cell.load_key
        return self._device

    def measure(self, task: CellTask, place: dict[str, Any], tick: Callable[..., None]) -> Steps:
        cell, experiment = task.cell, task.experiment
        load = experiment.load
        assert load is not None
        prepared, failed = _images(task, is_vision_language(self._processor))
        samples = [(s, imgs) for kept, images in prepared for s, imgs in zip(kept, images)]
        params = {**row_params(task, place, "vllm-server", 0), "threads": None}
        prefix = f"pt{self._run}-c{cell.index}"
        warm = [self._planned(task, samples, f"{prefix}-w{i}", i, 0.0) for i in range(experiment.warmup)]
        if warm:
            self._send(warm, 1, 1, tick, warmup=True)
            self._check_probe([p.request_id for p in warm], load.server)
        yield
        rows: list[dict[str, Any]] = []
        for repeat in range(experiment.repeats):
            offsets = arrivals.plan(cell.params["rate"], load.arrival, load.burstiness,
                                    seed=experiment.seed * 100_003 + cell.index * 1_009 + repeat,
                                    requests=load.requests, duration_s=load.duration_s)
            plan = [self._planned(task, samples, f"{prefix}-r{repeat}-{i}", i, t) for i, t in enumerate(offsets)]
            start, records = self._send(plan, load.clients, load.max_concurrency, tick)
            answered = [r["request_id"] for r in records if r["error"] is None and r["chunks"]]
            if not warm and repeat == 0 and answered:  # without a warm-up the first pass proves the probe
                self._check_probe(answered[:1], load.server)
            rows += self._rows(task, samples, plan, records, start, repeat, params, failed)
            yield
        return rows_to_table(rows), len(rows), failed

    def _planned(self, task: CellTask, samples: list[Any], request_id: str, index: int, offset: float) -> Planned:
        sample, images = samples[index % len(samples)]
        path, body = request_body(self._processor, task, sample, [distinct(img, request_id) for img in images])
        return Planned(index, request_id, offset, path, json.dumps(body).encode())

    def _send(self, plan: list[Planned], clients: int, cap: int | None, tick: Callable[..., None],
              warmup: bool = False) -> tuple[float, list[dict[str, Any]]]:
        records: list[dict[str, Any]] = []
        with Load(self._url, plan, clients=clients, max_concurrency=cap) as sending:
            for record in sending.records():
                if record is not None:
                    records.append(record)
                tick(warmup, counted=record is not None)  # raises Interrupted on Ctrl-C: the load stops
            return sending.start_ms, sorted(records, key=lambda r: r["index"])

    def _server_records(self, ids: list[str], wait_s: float = 5.0) -> ServerRecords:
        """The probe's records once they hold every request of ``ids`` (or after ``wait_s``)."""
        deadline = time.monotonic() + wait_s
        while True:
            records = read_records(self._probe_dir)
            try:
                for rid in ids:
                    find_request(records, rid)
                return records
            except JoinError:
                if time.monotonic() > deadline:
                    return records
                time.sleep(0.1)

    def _check_probe(self, ids: list[str], attached: str | None) -> None:
        records = self._server_records(ids)
        try:
            find_request(records, ids[0])
        except JoinError:
            where = f"the server at {attached}" if attached else "the vLLM server phasetime started"
            detail = f" (its plugin said: {records.errors[0]})" if records.errors else ""
            raise ServerError(f"{where} does not run phasetime's probe: no record of its requests in "
                              f"{self._probe_dir}{detail}; start it with PHASETIME_PROBE_DIR={self._probe_dir} "
                              "in an environment where phasetime is installed") from None

    def _rows(self, task: CellTask, samples: list[Any], plan: list[Planned], records: list[dict[str, Any]],
              start_ms: float, repeat: int, params: dict[str, Any], failed: list[dict[str, str]]) -> list[dict[str, Any]]:
        answered = [r for r in records if r["error"] is None and r["chunks"]]
        failed += [{"sample_id": r["request_id"], "error": r["error"] or "no token streamed"}
                   for r in records if r["error"] is not None or not r["chunks"]]
        server = self._server_records([r["request_id"] for r in answered])
        hosts = {p.get("host") for p in server.processes}
        fronts = []
        for r in answered:
            try:
                fronts.append((r, find_request(server, r["request_id"])[1]))
            except JoinError:
                continue
        offset, _ = clock_offset([(c, f) for c, f in fronts if f is not None], same_host=hosts <= {socket.gethostname()})
        prompts = {str(f["id"]): int(f["prompt_tokens"]) for _, f in fronts if f is not None}
        prefill = prompt_phases(server.steps, prompts)
        rows = []
        for record in answered:
            sample, images = samples[record["index"] % len(samples)]
            try:
                m, extra = request_measurement(record, server, offset, prefill)
            except (JoinError, ValueError) as exc:
                failed.append({"sample_id": record["request_id"], "error": f"not joined with the server's records: {exc}"})
                continue
            extra.update(client_fields(record, start_ms), **sample_fields(sample, images))
            add_prediction(extra, sample, record["text"], task.experiment.metric)
            call_id = task.first_call_id + repeat * len(plan) + record["index"]
            rows += measurement_rows(m, call_id=call_id, repeat=repeat, params=params, extras=[extra])
        return rows


def processor_of(name: str, path: str, trust_remote_code: bool) -> Any:
    """The model's processor (for its chat template): a built-in's own, as the hf backend
    builds it (AutoProcessor would want torchvision for Qwen2-VL's video processor), else the
    checkpoint's."""
    from ...models import BUILTIN, load as load_model

    if name in BUILTIN:
        model, processor = load_model(name, "cpu", "float32")
        del model
        return processor
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)


def engine_flags(args: dict[str, Any]) -> list[str]:
    """``engine_args`` as the server's command-line flags (``max_num_seqs: 4`` -> ``--max-num-seqs 4``)."""
    flags: list[str] = []
    for key, value in args.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value is False:
            flags.append("--no-" + key.replace("_", "-"))
        else:
            flags += [flag, json.dumps(value) if isinstance(value, (dict, list)) else str(value)]
    return flags


def distinct(image: Any, request_id: str) -> Any:
    """The image with its corner pixel set from the request's id: every request's image is its
    own, so vLLM's encoder and processor caches (keyed by the image's hash) cannot answer a
    repeat of the synthetic image or of a sample sent twice, and each request is encoded as a
    new image would be."""
    code = zlib.crc32(request_id.encode())
    copy = image.convert("RGB")
    copy.putpixel((0, 0), (code & 255, (code >> 8) & 255, (code >> 16) & 255))
    return copy


def data_url(image: Any) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def request_body(processor: Any, task: CellTask, sample: Any, images: list[Any]) -> tuple[str, dict[str, Any]]:
    """(the endpoint, the JSON body) of one sample's request: the chat endpoint with the images
    as data URLs for a model that takes images, else the completions endpoint with the prompt
    the hf backend feeds (its chat template applied)."""
    experiment, cell = task.experiment, task.cell
    load = experiment.load
    assert load is not None
    question = format_question(sample, experiment.prompt.pre, experiment.prompt.post)
    n = cell.params["max_new_tokens"]
    if load.output == "data":
        answer = sample.answers[0] if sample.answers else ""
        n = max(1, len(tokenizer_of(processor)(answer, add_special_tokens=False)["input_ids"]))
    options = json.loads(cell.params["generation"])
    body: dict[str, Any] = {"model": cell.model.name, "max_tokens": n, "min_tokens": n, "ignore_eos": True,
                            "temperature": float(options.get("temperature", 1.0)) if options.get("do_sample") else 0.0,
                            "seed": experiment.seed, "stream": True,
                            "stream_options": {"include_usage": True, "continuous_usage_stats": True}}
    body.update({k: options[k] for k in ("top_p", "top_k") if options.get("do_sample") and k in options})
    if images:
        content = [{"type": "image_url", "image_url": {"url": data_url(img)}} for img in images]
        body["messages"] = [{"role": "user", "content": content + [{"type": "text", "text": question}]}]
        return "/v1/chat/completions", body
    body["prompt"] = chat_prompt(processor, question, 0)
    return "/v1/completions", body


__all__ = ["ServerBackend", "engine_flags", "request_body"]
