"""Every column of a results file, declared once.

Each :class:`Column` has a name, an Arrow type, a unit, a role and a sentence of
documentation. The Parquet schema, the row builder (:func:`phasetime.results.rows.measurement_rows`),
the phase and parameter lists the analysis uses, and the column table of
``docs/experiments.md`` (a test compares it with :func:`markdown_table`) are all derived
from :data:`COLUMNS`.

Roles: ``id`` (which call and sequence), ``call`` (facts of the call), ``phase`` (a
duration, ms), ``raw`` (per-step lists the phases derive from), ``axis`` (a swept cell
parameter), ``parameter`` (another cell parameter), ``sample`` (the sample and its
answer), ``placement`` (where the call ran) and ``resource`` (what a sensor recorded).

Schema history (``phasetime.schema`` in the Parquet metadata and in run.json):

* 1 -- phasetime 0.1.
* 2 -- every declared column is written (nulls where not measured, with its declared type
  instead of one inferred from the values); ``decode_vision_ms``, ``probe_ms``,
  ``threads``, ``host``, ``device``, ``worker`` and the resource columns added. Version 1
  files are still read. phasetime 0.3 adds ``compiles``, ``sensor_syncs``, ``setup_ms``,
  ``handoff_ms``, ``first_token_ms``, ``decoding``, ``num_beams``, ``draft``, the
  round columns (``draft_ms`` ... ``round_draft_forwards``), ``backend`` and the engine
  columns (``input_ms`` ... ``engine_encoder_ms``), ``audio_ms``, ``audio_calls``,
  ``decode_audio_ms`` and ``weights_audio_bytes`` within version 2, and 0.4 the serving
  columns (``request_id`` ... ``gap_encoder_inputs``)
  (a reader of version 2 reads the columns it knows; files without them read as null).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from ..sensors.cost import COST_COLUMNS
from ..sensors.energy import ENERGY_COLUMNS
from ..sensors.base import SensorColumn
from ..sensors.memory import MemorySensor

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
ROLES = ("id", "call", "phase", "raw", "axis", "parameter", "sample", "placement", "resource")


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    role: str
    unit: str
    doc: str

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"column {self.name}: unknown role {self.role!r}")


_F, _I32, _I64, _S = pa.float64(), pa.int32(), pa.int64(), pa.string()
_SPAN = pa.struct([("name", _S), ("start_ms", _F), ("end_ms", _F)])

COLUMNS: tuple[Column, ...] = (
    Column("call_id", _I64, "id", "", "the measured call: cell x 1,000,000 + its number in the cell"),
    Column("repeat", _I32, "id", "", "the repeat index of the call"),
    Column("method", _S, "axis", "", "`direct`, or `subtract` (the legacy baseline)"),
    Column("backend", _S, "axis", "", "the engine: `hf` (generate()) or `vllm` (null: a run made before 0.3, hf)"),
    Column("timer", _S, "call", "", "the clock: `perf-counter` or `cuda-event`"),
    Column("sequence", _I32, "id", "", "the sequence's index in the batch"),
    Column("call_sequences", _I32, "call", "", "sequences in the call (the batch)"),
    Column("prompt_tokens", _I32, "call", "tokens", "prompt positions the model consumed (image placeholders included)"),
    Column("output_tokens", _I32, "call", "tokens", "tokens this sequence generated, up to where generate() ended it"),
    Column("total_ms", _F, "phase", "ms", "the call, from entering generate() to its return"),
    Column("vision_ms", _F, "phase", "ms", "the vision encoder and its connectors (found by following the data), every image and video of the call"),
    Column("audio_ms", _F, "phase", "ms", "the audio encoder and its connectors, every audio input of the call (null: a run made before 0.3)"),
    Column("prefill_ms", _F, "phase", "ms", "the forward(s) consuming the prompt, without vision nested in them"),
    Column("ttft_ms", _F, "phase", "ms", "time to the first token"),
    Column("decode_ms", _F, "phase", "ms", "this sequence's decode: ready[N] - ready[1], without vision run inside it"),
    Column("call_decode_ms", _F, "phase", "ms", "the call's decode (its longest sequence)"),
    Column("other_ms", _F, "phase", "ms", "total - vision - audio - prefill - decode: generate()'s own work"),
    Column("setup_ms", _F, "phase", "ms", "part of other: entering generate() to the first vision call or prefill forward"),
    Column("handoff_ms", _F, "phase", "ms", "part of other: vision's end to the prefill forward, and gaps of a chunked prefill"),
    Column("first_token_ms", _F, "phase", "ms", "part of other: the last prefill forward's end to token 1 being ready"),
    Column("decode_steps", _I32, "call", "", "decode forwards of the call (N - 1 for its longest sequence)"),
    Column("tpot_ms", _F, "phase", "ms", "this sequence's decode / (N - 1); null when N < 2"),
    Column("itl_ms", pa.list_(_F), "raw", "ms", "this sequence's N - 1 inter-token gaps"),
    Column("ready_ms", pa.list_(_F), "raw", "ms", "when each output token was ready, from the call start"),
    Column("decode_forward_ms", pa.list_(_F), "raw", "ms", "the duration of every decode forward alone"),
    Column("spans", pa.list_(_SPAN), "raw", "ms", "every timed interval (vision, prefill, decode) from the call start"),
    Column("prefill_forwards", _I32, "call", "", "forwards that consumed the prompt (more than 1: chunked prefill)"),
    Column("vision_calls", _I32, "call", "", "calls of the outermost vision modules (tower and connector: 2 per encoding)"),
    Column("decode_vision_ms", _F, "phase", "ms", "vision re-run inside decode forwards (in vision_ms, not in decode_ms)"),
    Column("audio_calls", _I32, "call", "", "calls of the outermost audio modules"),
    Column("decode_audio_ms", _F, "phase", "ms", "audio encoding re-run inside decode forwards (in audio_ms, not in decode_ms)"),
    Column("probe_ms", _F, "phase", "ms", "host time the probe spent in its own hooks during the call"),
    Column("compiles", _I32, "call", "", "graphs torch.compile compiled during the call (not a latency when > 0)"),
    # how the call decoded, and the rounds of assisted / prompt-lookup decoding
    Column("decoding", _S, "call", "", "`greedy`, `sample`, `assisted` (a draft model), `prompt_lookup`, `beam_search` or `beam_sample`"),
    Column("num_beams", _I32, "call", "", "beams of a beam search (1 otherwise)"),
    Column("draft_ms", _F, "phase", "ms", "part of decode: the candidate searches (draft model or prompt lookup) of rounds 2.."),
    Column("verify_ms", _F, "phase", "ms", "part of decode: the target's verify forwards of rounds 2.."),
    Column("first_draft_ms", _F, "phase", "ms", "part of other: round 1's candidate search, before the prefill forward"),
    Column("rounds", _I32, "call", "", "rounds of assisted / prompt-lookup decoding (null otherwise)"),
    Column("proposed_tokens", _I32, "call", "tokens", "candidates proposed over all rounds"),
    Column("accepted_tokens", _I32, "call", "tokens", "candidates the target accepted over all rounds"),
    Column("acceptance_rate", _F, "call", "", "accepted / proposed tokens (null when nothing was proposed)"),
    Column("tokens_per_round", _F, "call", "tokens", "tokens the rounds added, per round (accepted + 1 each)"),
    Column("round_tokens", pa.list_(_I32), "raw", "tokens", "tokens each round added, all ready at once"),
    Column("round_proposed", pa.list_(_I32), "raw", "tokens", "candidates each round proposed"),
    Column("round_draft_ms", pa.list_(_F), "raw", "ms", "each round's candidate search"),
    Column("round_verify_ms", pa.list_(_F), "raw", "ms", "each round's verify forward (round 1's is the prefill)"),
    Column("round_draft_forwards", pa.list_(_I32), "raw", "", "the draft model's forwards in each round"),
    Column("round_gap_ms", pa.list_(_F), "raw", "ms", "the gaps between consecutive rounds' ready times"),
    # a serving engine's request (backend vllm; null on generate())
    Column("input_ms", _F, "phase", "ms", "part of other (vLLM): submitting the request to its arrival in the engine's queue (prompt and image processing)"),
    Column("queue_ms", _F, "phase", "ms", "part of other (vLLM): the engine's queue to the first step the request is in"),
    Column("engine_ttft_ms", _F, "call", "ms", "vLLM's own time to first token (arrival to first token)"),
    Column("engine_prefill_ms", _F, "call", "ms", "vLLM's own prefill (first scheduled to first token: vision included)"),
    Column("engine_tpot_ms", _F, "call", "ms", "vLLM's own per-token time: (last token - first token) / (N - 1)"),
    Column("engine_encoder_ms", _F, "call", "ms", "vLLM's own encoder-forward time of the request (enable_mm_processor_stats)"),
    # a request sent to a server under load (backend vllm-server; null otherwise)
    Column("request_id", _S, "id", "", "the request's id (its X-Request-Id; the server's records use it)"),
    Column("rate", _F, "axis", "req/s", "the planned request rate of the load the request was part of (null: not a load)"),
    Column("sent_ms", _F, "call", "ms", "when the client sent the request, from its rate level's start"),
    Column("send_lag_ms", _F, "call", "ms", "the client's own delay: sent - planned, without slot_wait_ms"),
    Column("slot_wait_ms", _F, "call", "ms", "time the request waited for a max_concurrency slot before it was sent"),
    Column("client_ttft_ms", _F, "call", "ms", "the client's time to first token: sent to the first streamed chunk (bench serve's)"),
    Column("client_e2e_ms", _F, "call", "ms", "the client's end-to-end latency: sent to the last streamed chunk"),
    Column("client_tpot_ms", _F, "call", "ms", "(client_e2e - client_ttft) / (N - 1), N the server's token count (bench serve's)"),
    Column("client_itl_ms", pa.list_(_F), "raw", "ms", "the gaps between consecutive streamed chunks, as the client saw them"),
    Column("client_tokens", _I32, "call", "tokens", "output tokens the server reported in its stream (usage)"),
    Column("preemptions", _I32, "call", "", "times vLLM preempted the request (its KV cache freed and recomputed)"),
    Column("clock_offset_ms", _F, "call", "ms", "server clock - client clock (0: one host; else measured from the requests)"),
    Column("gap_requests", pa.list_(_I32), "raw", "", "per decode gap: the other requests in the engine step that made the token"),
    Column("gap_prefill_tokens", pa.list_(_I32), "raw", "tokens", "per decode gap: other requests' prompt tokens in that step (prefill chunks)"),
    Column("gap_encoder_inputs", pa.list_(_I32), "raw", "", "per decode gap: other requests' images the step encoded"),
    # cell parameters
    Column("cell", _I64, "parameter", "", "the cell's index in the experiment's grid"),
    Column("model", _S, "axis", "", "built-in name, hub id or local directory"),
    Column("draft", _S, "parameter", "", "the draft model of assisted decoding, `generation`'s `draft` (null: none)"),
    Column("dtype", _S, "axis", "", "the weights' dtype"),
    Column("attn_implementation", _S, "axis", "", "attention implementation (null: the model's default)"),
    Column("image_size", _I64, "axis", "px", "longer image side after resizing (null: as given)"),
    Column("max_pixels", _I64, "axis", "px", "pixel budget of a dynamic-resolution processor"),
    Column("max_visual_tokens", _I64, "axis", "tokens", "the same budget in visual tokens"),
    Column("batch_size", _I64, "axis", "", "prompts per call"),
    Column("generation", _S, "axis", "", "extra generate() options, as JSON"),
    Column("max_new_tokens", _I64, "axis", "tokens", "generate()'s max_new_tokens"),
    Column("min_new_tokens", _I64, "parameter", "tokens", "generate()'s min_new_tokens"),
    Column("metric", _S, "parameter", "", "the scoring metric (null: unscored)"),
    Column("threads", _I64, "parameter", "", "torch intra-op threads during the call"),
    # the sample
    Column("sample_id", _S, "sample", "", "the sample's id"),
    Column("category", _S, "sample", "", "the sample's category, if the data set has one"),
    Column("prediction", _S, "sample", "", "the decoded answer"),
    Column("score", _F, "sample", "", "its score in [0, 1] (null when unscored)"),
    Column("n_images", _I64, "sample", "", "images of the sample"),
    Column("image_width", _I64, "sample", "px", "first image's width as fed"),
    Column("image_height", _I64, "sample", "px", "first image's height as fed"),
    Column("visual_tokens", _I64, "sample", "tokens", "image placeholder tokens in the prompt"),
    Column("preprocess_ms", _F, "sample", "ms", "processor time of the call, outside generate()"),
    # where it ran
    Column("host", _S, "placement", "", "the host name of the worker that ran the call"),
    Column("device", _S, "placement", "", "the device the model ran on, e.g. `cuda:0` or `cpu`"),
    Column("worker", _S, "placement", "", "the executor's worker (`local`, or a Ray worker's id)"),
)

_TYPES = {"float": _F, "int": _I64, "str": _S}


def _resource(column: SensorColumn) -> Column:
    return Column(column.name, _TYPES[column.kind], "resource", column.unit, column.doc)


# What the sensors record (null unless a run asked for them: --memory, --cost, --energy).
COLUMNS = COLUMNS + tuple(_resource(c) for c in (*MemorySensor.columns, *COST_COLUMNS, *ENERGY_COLUMNS))

BY_NAME = {c.name: c for c in COLUMNS}
NAMES = tuple(c.name for c in COLUMNS)


def names(*roles: str) -> tuple[str, ...]:
    """The column names of the given roles, in declaration order."""
    return tuple(c.name for c in COLUMNS if c.role in roles)


# What the analysis summarises per cell, in the order tables show it.
SUMMARY_PHASES = ("vision_ms", "prefill_ms", "ttft_ms", "tpot_ms", "decode_ms", "total_ms")
# The parameters a grid sweeps: what tells one cell from another, in the order tables show them.
AXES = ("model", "backend", "method", "dtype", "attn_implementation", "image_size", "max_pixels", "max_visual_tokens",
        "batch_size", "generation", "max_new_tokens", "rate")

assert set(SUMMARY_PHASES) <= set(names("phase"))
assert set(AXES) == set(names("axis"))


def arrow_schema(extra: tuple[Column, ...] = ()) -> pa.Schema:
    """The Parquet schema of a results file (with the version tag)."""
    schema = pa.schema([(c.name, c.type) for c in (*COLUMNS, *extra)])
    return schema.with_metadata({b"phasetime.schema": str(SCHEMA_VERSION).encode()})


def markdown_table() -> str:
    """The column table of docs/experiments.md."""
    lines = ["| column | unit | role | meaning |", "|---|---|---|---|"]
    for c in COLUMNS:
        lines.append(f"| `{c.name}` | {c.unit or ''} | {c.role} | {c.doc} |")
    return "\n".join(lines)
