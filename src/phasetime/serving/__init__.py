"""Serving under load: an OpenAI-compatible server driven at a request rate, each request's
time split inside the server.

* :mod:`.arrivals`: when each request is sent (Poisson, gamma, constant), purely;
* :mod:`.client`: the open-loop client, asyncio in its own process(es), timing each streamed
  token as vLLM's ``bench serve`` does;
* :mod:`.join`: the client's records joined with the server probe's (pure): one row per request.

The server side (starting vLLM with phasetime's plugin) is :mod:`phasetime.vllm.server`; what
the rows say per rate (throughput, percentiles, goodput, where TTFT goes) is
:mod:`phasetime.analysis.load`.
"""
