"""The vLLM adapter: engine steps turned into the core's events, one request at a time.

* :mod:`.steps`: a serving engine's steps into a request's events (pure);
* :mod:`.worker_probe`: the probe inside vLLM's worker, recording every step (no vLLM import);
* :mod:`.engine`: the offline engine: started with the probe, a call's requests submitted,
  each request's measurement and vLLM's own figures of it.

vLLM itself is imported only by :mod:`.engine`, only when a run asks for it.
"""
