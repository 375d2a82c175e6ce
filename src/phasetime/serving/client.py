"""The open-loop client: each request sent at its planned moment, every streamed chunk timed.

It runs asyncio in its own process (or several, ``clients``), so that the driver's work
(storing rows, drawing progress) cannot delay a send. Each is a fresh interpreter
(``python -m phasetime.serving.client``, the job on its stdin, records on its stdout) that
imports only the standard library: HTTP/1.1 over ``asyncio`` streams, a fresh connection per request, the response read
as server-sent events as they arrive. The definitions are vLLM's ``bench serve``: the clock
starts before the request is sent (connecting included), TTFT is the first chunk that carries
a choice, every later such chunk adds one inter-token gap, and the end-to-end latency ends at
the last one; the token count is the server's ``usage`` (``continuous_usage_stats``).

A request records when it was planned, when it was sent (``lag_ms``: the client's own delay;
``slot_ms``: the part spent waiting for a ``max_concurrency`` slot), every chunk's arrival
with the tokens so far, and the error the server answered, if any. Times are
``time.perf_counter()`` in ms: on Linux CLOCK_MONOTONIC, one clock for every process of a host.
"""

from __future__ import annotations

import asyncio
import json
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator
from urllib.parse import urlsplit

DONE = "done"


@dataclass(frozen=True)
class Planned:
    """One request to send: ``offset_s`` after the level's start, to ``path`` with ``body``."""

    index: int
    request_id: str
    offset_s: float
    path: str
    body: bytes


def _now_ms() -> float:
    return time.perf_counter() * 1e3


async def _read_chunked(reader: asyncio.StreamReader) -> Any:
    """The body of a chunked response, chunk by chunk."""
    while True:
        size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
        if size == 0:
            await reader.readline()
            return
        data = await reader.readexactly(size)
        await reader.readexactly(2)
        yield data


async def request(host: str, port: int, planned: Planned, start_ms: float, headers: dict[str, str] | None = None,
                  slot_ms: float = 0.0) -> dict[str, Any]:
    """Send one request now and read its streamed answer; its record (see the module)."""
    sent = _now_ms()
    record: dict[str, Any] = {"index": planned.index, "request_id": planned.request_id,
                              "planned_ms": start_ms + planned.offset_s * 1e3, "sent_ms": sent, "slot_ms": slot_ms,
                              "chunks": [], "tokens": [], "prompt_tokens": None, "text": "", "error": None}
    writer = None
    try:
        reader, writer = await asyncio.open_connection(host, port)
        head = [f"POST {planned.path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json",
                f"Content-Length: {len(planned.body)}", "Connection: close", f"X-Request-Id: {planned.request_id}"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + planned.body)
        await writer.drain()
        status = (await reader.readline()).decode(errors="replace").split(" ", 2)
        fields: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            key, _, value = line.decode(errors="replace").partition(":")
            fields[key.strip().lower()] = value.strip()
        code = int(status[1]) if len(status) > 1 and status[1].isdigit() else 0
        if fields.get("transfer-encoding", "").lower() != "chunked":
            body = await reader.readexactly(int(fields.get("content-length", "0") or 0))
            record["error"] = f"HTTP {code}: {_message(body)}" if code != 200 else "the server did not stream its answer"
            return record
        buffer = b""
        async for data in _read_chunked(reader):
            buffer += data
            while b"\n\n" in buffer:
                event, buffer = buffer.split(b"\n\n", 1)
                _event(record, event, _now_ms())
        if code != 200 and record["error"] is None:
            record["error"] = f"HTTP {code}"
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if writer is not None:
            writer.close()
    return record


def _message(body: bytes) -> str:
    try:
        data = json.loads(body)
        return str(data.get("error", {}).get("message") or data.get("message") or data)[:300]
    except (ValueError, AttributeError):
        return body.decode(errors="replace")[:300]


def _event(record: dict[str, Any], event: bytes, at_ms: float) -> None:
    for line in event.split(b"\n"):
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if payload == b"[DONE]":
            return
        data = json.loads(payload)
        if "error" in data:
            record["error"] = str(data["error"].get("message", data["error"]))[:300]
            return
        usage = data.get("usage") or {}
        if usage.get("prompt_tokens") is not None:
            record["prompt_tokens"] = int(usage["prompt_tokens"])
        choices = data.get("choices") or []
        if choices:  # bench serve's rule: every chunk with a choice is a token arrival, its text may be empty
            record["chunks"].append(at_ms)
            record["tokens"].append(int(usage.get("completion_tokens", len(record["tokens"]) + 1)))
            choice = choices[0]
            record["text"] += choice.get("text") or (choice.get("delta") or {}).get("content") or ""


async def drive(url: str, plan: list[Planned], start_ms: float, max_concurrency: int | None,
                out: "queue.Queue[Any] | Any", headers: dict[str, str] | None = None) -> None:
    """Send every planned request at ``start_ms`` + its offset; each record goes to ``out``."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    slots = asyncio.Semaphore(max_concurrency) if max_concurrency else None

    async def one(planned: Planned) -> None:
        delay = (start_ms + planned.offset_s * 1e3 - _now_ms()) / 1e3
        if delay > 0:
            await asyncio.sleep(delay)
        if slots is None:
            out.put(await request(host, port, planned, start_ms, headers))
            return
        waited = _now_ms()
        async with slots:
            out.put(await request(host, port, planned, start_ms, headers, slot_ms=_now_ms() - waited))

    await asyncio.gather(*(one(p) for p in plan))


def main() -> None:
    """A client process (``python -m phasetime.serving.client``): its job as one JSON line on
    stdin (url, plan, max_concurrency, headers), ``ready`` on stdout, the start time (ms) as
    the next line on stdin, then each record as a JSON line on stdout as it finishes, and
    ``done``. A plain interpreter: it imports nothing of the driver's (no torch, not the
    driver's script, whatever started it)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver stops the load; Ctrl-C is for it
    job = json.loads(sys.stdin.readline())
    plan = [Planned(p["index"], p["request_id"], p["offset_s"], p["path"], p["body"].encode()) for p in job["plan"]]
    print("ready", flush=True)
    start_ms = float(sys.stdin.readline())

    class Out:
        @staticmethod
        def put(record: dict[str, Any]) -> None:
            sys.stdout.write(json.dumps(record) + "\n")
            sys.stdout.flush()
    try:
        asyncio.run(drive(job["url"], plan, start_ms, job["max_concurrency"], Out, job["headers"]))
    finally:
        print(DONE, flush=True)


class Load:
    """The plan sent by ``clients`` processes (round-robin); records come back as they finish.

    ``with Load(...) as load: for record in load.records(): ...``; leaving the block stops
    every process, finished or not (the driver's Ctrl-C)."""

    def __init__(self, url: str, plan: list[Planned], *, clients: int = 1, max_concurrency: int | None = None,
                 headers: dict[str, str] | None = None, lead_s: float = 0.2) -> None:
        n = 1 if max_concurrency else max(1, min(clients, len(plan)))  # one cap, one process
        self.jobs = [{"url": url, "max_concurrency": max_concurrency, "headers": headers,
                      "plan": [{"index": p.index, "request_id": p.request_id, "offset_s": p.offset_s, "path": p.path,
                                "body": p.body.decode()} for p in plan[i::n]]} for i in range(n)]
        self.processes: list[subprocess.Popen[str]] = []
        self.out: "queue.Queue[str | None]" = queue.Queue()
        self.lead_s, self.total = lead_s, len(plan)
        self.start_ms = 0.0

    def _read(self, process: "subprocess.Popen[str]") -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.out.put(line.rstrip("\n"))
        self.out.put(None)  # the process ended

    def __enter__(self) -> "Load":
        for job in self.jobs:
            process = subprocess.Popen([sys.executable, "-m", "phasetime.serving.client"], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True, start_new_session=False)
            assert process.stdin is not None
            process.stdin.write(json.dumps(job) + "\n")
            process.stdin.flush()
            self.processes.append(process)
            threading.Thread(target=self._read, args=(process,), daemon=True).start()
        for _ in self.processes:
            if self.out.get(timeout=60) != "ready":
                raise RuntimeError("a client process did not start")
        self.start_ms = _now_ms() + self.lead_s * 1e3
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write(f"{self.start_ms!r}\n")
            process.stdin.flush()
        return self

    def records(self, poll_s: float = 0.2) -> Iterator[dict[str, Any] | None]:
        """Each request's record as it finishes; None every ``poll_s`` without one (a chance to stop)."""
        done = ended = 0
        while done < len(self.processes):
            try:
                item = self.out.get(timeout=poll_s)
            except queue.Empty:
                yield None
                continue
            if item is None:
                ended += 1
                if ended > done:
                    raise RuntimeError("a client process died before it sent its requests")
            elif item == DONE:
                done += 1
            else:
                yield json.loads(item)

    def __exit__(self, *exc: Any) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    main()
