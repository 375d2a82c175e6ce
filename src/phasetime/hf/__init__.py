"""The Hugging Face ``generate()`` adapter: one measured call turned into the core's events.

Its rooms, imports pointing down the list:

* :mod:`.generation`: what a call will do, read from its arguments and the model (one reader
  of generation options); the output lengths afterwards;
* :mod:`.media`: which modules are a call's media encoders, found by following the data of
  the first call that carries each kind of media (:mod:`.names`: the fallback by name);
* :mod:`.call`: one call's recording: the marks of every probe, then ``derive``;
* :mod:`.drafts`: the rounds of assisted and prompt-lookup decoding;
* :mod:`.hooks`: the patches and hooks a model carries while probes are attached;
* :mod:`.probe`, :mod:`.measure`, :mod:`.legacy`: the public ``Probe`` and ``measure``, and the
  legacy subtraction baseline; :mod:`.replay`: a call replayed under a FLOP counter.
"""
