"""The ``load:`` section of an experiment on ``backend: vllm-server``: how a server is driven.

Every planned rate is a cell (``rate`` in the results); ``requests`` per rate, or every
arrival within ``duration_s``, sent open-loop (:mod:`phasetime.serving.arrivals`) by
``clients`` processes, at most ``max_concurrency`` in flight when given. ``output: fixed`` asks
for exactly ``max_new_tokens`` tokens (``ignore_eos``); ``output: data`` for the length of each
sample's first answer. ``slo`` gives the goodput's targets. Without ``server`` phasetime starts
vLLM's OpenAI server itself (from ``python``, default ``.venv-vllm/bin/python``) with its
probe; ``server: URL`` attaches to a running one started with the plugin, whose records go to
``probe_dir``. See docs/experiments.md, "Serving under load".
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from .parts import _Strict

# The client's timer spreads sends over ~1 ms (docs/benchmarks.md, "Serving"): above this rate
# the mean gap between arrivals is under that spread, so it is refused up front (between ~100/s
# and this, a level that was not held says so).
MAX_RATE = 1000.0


class Slo(_Strict):
    """Service-level objectives: a request is good when it meets every one given."""

    ttft_ms: Annotated[float, Field(gt=0)] | None = None
    tpot_ms: Annotated[float, Field(gt=0)] | None = None
    e2e_ms: Annotated[float, Field(gt=0)] | None = None


class LoadSpec(_Strict):
    rates: list[Annotated[float, Field(gt=0)]] = Field(min_length=1, max_length=100)
    arrival: Literal["poisson", "gamma", "constant"] = "poisson"
    burstiness: Annotated[float, Field(gt=0, le=1000)] = 1.0
    requests: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    duration_s: Annotated[float, Field(gt=0, le=86_400)] | None = None
    max_concurrency: Annotated[int, Field(ge=1, le=100_000)] | None = None
    clients: Annotated[int, Field(ge=1, le=64)] = 1
    output: Literal["fixed", "data"] = "fixed"
    slo: Slo = Slo()
    server: str | None = None
    probe_dir: str | None = None
    python: str | None = None
    port: Annotated[int, Field(ge=0, le=65535)] = 0  # 0: a free port
    startup_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 300.0
    server_args: list[str] = Field(default_factory=list)

    @field_validator("rates")
    @classmethod
    def _rates(cls, rates: list[float]) -> list[float]:
        too_high = [r for r in rates if r > MAX_RATE]
        if too_high:
            raise ValueError(f"rate {too_high[0]:g}/s is more than the client can send (at most {MAX_RATE:g}/s: it "
                             "spreads its sends over ~1 ms)")
        if len(set(rates)) != len(rates):
            raise ValueError("rates repeat a value")
        return rates

    @field_validator("server")
    @classmethod
    def _url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"server must be an http://host:port URL, not {url!r}")
        return url.rstrip("/")

    @model_validator(mode="after")
    def _how_many(self) -> "LoadSpec":
        if (self.requests is None) == (self.duration_s is None):
            raise ValueError("give either requests (per rate) or duration_s")
        if self.server is not None and self.probe_dir is None:
            raise ValueError("server: URL needs probe_dir, the folder its phasetime plugin writes to "
                             "(PHASETIME_PROBE_DIR of the server)")
        if self.server is None and self.probe_dir is not None:
            raise ValueError("probe_dir is for an attached server (server: URL); phasetime keeps its own server's records")
        return self
