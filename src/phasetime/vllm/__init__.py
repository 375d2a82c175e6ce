"""The vLLM adapter: engine steps turned into the core's events, one request at a time.

* :mod:`.steps`: a serving engine's steps into a request's events (pure);
* :mod:`.worker_probe`: the probe inside vLLM's worker, recording every step (no vLLM import);
* :mod:`.engine`: the offline engine: started with the probe, a call's requests submitted,
  each request's measurement and vLLM's own figures of it;
* :mod:`.plugin`: the probe inside a vLLM server, a ``vllm.general_plugins`` entry point that
  does nothing unless ``PHASETIME_PROBE_DIR`` is set;
* :mod:`.server`: vLLM's OpenAI server started with the plugin, and always stopped.

vLLM itself is imported only by :mod:`.engine` and, inside vLLM's own processes, by
:mod:`.plugin`, only when a run asks for it.
"""
