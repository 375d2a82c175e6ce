"""What a ``generate()`` call produced: its token tensor and each row's output length.

The lengths come from what generate()'s stopping criteria decided during the call
(:class:`StopRecorder`), which knows stop strings and custom criteria too; counting up to the
first EOS (:func:`count_output_tokens`) is the fallback. No timing here.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch


def count_output_tokens(generated: torch.Tensor, eos_ids: Iterable[int]) -> list[int]:
    """Output tokens per row of ``generated`` ([B, G], the new tokens only), read from the tokens.

    A row ends at its first EOS, which counts; what follows is padding. The probe prefers
    what generate()'s stopping criteria decided during the call (see ``StopRecorder``),
    which also knows stop strings and custom criteria; this is the fallback.
    """
    # generated: [B, G]
    eos = set(eos_ids)
    lengths = []
    for row in generated.tolist():
        n = len(row)
        for j, tok in enumerate(row):
            if tok in eos:
                n = j + 1
                break
        lengths.append(n)
    return lengths


def sequences_tensor(output: Any) -> torch.Tensor:
    """The token tensor of generate()'s return value (a tensor or a ModelOutput)."""
    return output.sequences if hasattr(output, "sequences") else output


class StopRecorder:
    """Wraps generate()'s stopping criteria to record, per step, which rows they declared done.

    generate() calls its criteria once per generated token (after appending it) and
    AND-accumulates the result into its unfinished-rows mask; the first step at which a
    row's criteria say "done" is therefore the row's output length, whatever stopped it
    (EOS, a stop string, a custom criterion, max length). The per-step results stay on
    the device until the call has ended, so recording adds no synchronisation.
    """

    def __init__(self) -> None:
        self.steps: list[Any] = []

    def wrap(self, criteria: Any) -> Any:
        recorder = self

        class RecordingCriteria(type(criteria)):  # type: ignore[misc]
            def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> Any:
                done = super().__call__(input_ids, scores, **kwargs)
                recorder.steps.append(done)
                return done

        wrapped = RecordingCriteria(criteria)
        for name, value in vars(criteria).items():
            setattr(wrapped, name, value)
        return wrapped

    def lengths(self, rows: int, generated: int) -> list[int] | None:
        """Output tokens per row (None when the criteria were never consulted)."""
        if not self.steps:
            return None
        # done: [steps, B]
        done = torch.stack([torch.as_tensor(s, device="cpu").reshape(-1).bool() for s in self.steps])
        if done.shape[1] != rows:
            return None
        lengths = []
        for row in range(rows):
            hits = torch.nonzero(done[:, row]).flatten()
            lengths.append(min(int(hits[0]) + 1, generated) if hits.numel() else generated)
        return lengths
