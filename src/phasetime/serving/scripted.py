"""A scripted OpenAI-style streaming server, for checking a client against known delays.

:class:`ScriptedServer` listens on a free local port in a thread of its own and answers every
POST with ``max_tokens`` server-sent events, the first after ``first_s`` and each next one
``gap_s`` later, each with vLLM's ``usage`` (``continuous_usage_stats``); a body asking for
0 tokens gets HTTP 400 with vLLM's error shape. A streamed gap the client measures can only
be longer than the server's pause: that is the truth the tests hold the client to, and the
client's capacity benchmark sends to it (``benchmarks/serve.py``).
"""

from __future__ import annotations

import asyncio
import json
import threading


class ScriptedServer:
    def __init__(self, first_s: float = 0.0, gap_s: float = 0.001, prompt_tokens: int = 7) -> None:
        self.first_s, self.gap_s, self.prompt_tokens = first_s, gap_s, prompt_tokens
        self.ids: list[str] = []
        self.port = 0
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._serve, args=(ready,), daemon=True).start()
        if not ready.wait(10):
            raise RuntimeError("the scripted server did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._answer, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        headers = {}
        await reader.readline()
        while (line := await reader.readline()) not in (b"\r\n", b""):
            key, _, value = line.decode().partition(":")
            headers[key.strip().lower()] = value.strip()
        body = json.loads(await reader.readexactly(int(headers.get("content-length", "0"))))
        self.ids.append(headers.get("x-request-id", ""))
        tokens = int(body.get("max_tokens", 1))
        if tokens == 0:
            error = json.dumps({"error": {"message": "max_tokens must be at least 1"}}).encode()
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: %d\r\n\r\n%s" % (len(error), error))
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            for k in range(1, tokens + 1):
                await asyncio.sleep(self.first_s if k == 1 else self.gap_s)
                usage = {"prompt_tokens": self.prompt_tokens, "completion_tokens": k}
                event = b"data: " + json.dumps({"choices": [{"text": "x" if k % 2 else ""}], "usage": usage}).encode()
                self._chunk(writer, event + b"\n\n")
                await writer.drain()
            self._chunk(writer, b"data: [DONE]\n\n")
            writer.write(b"0\r\n\r\n")
        await writer.drain()
        writer.close()

    @staticmethod
    def _chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(b"%x\r\n%s\r\n" % (len(data), data))
