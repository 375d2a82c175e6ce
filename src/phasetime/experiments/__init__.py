"""Experiments: files that declare sweeps and data sets, the models they load, and how their
cells run into a results directory. Four rooms: :mod:`.plan` (what to measure: the file, its
checks, the grid of cells), :mod:`.data` (what each call is fed and how it is scored),
:mod:`.models` (loading models, the built-in tiny ones, inspection) and :mod:`.running` (the
run, the worker that measures a cell, the executors, the machine's conditions).

    exp = phasetime.experiments.load_experiment("examples/latency.yaml")
    result = phasetime.experiments.run_experiment(exp, "results/latency")

Above :mod:`phasetime.core` and :mod:`phasetime.results`; beside :mod:`phasetime.analysis`,
which it never imports.
"""

from __future__ import annotations

from .plan.checks import RunError
from .plan.quick import quick_experiment
from .plan.spec import Experiment, ExperimentError, load_experiment, parse_experiment
from .running.run import RunResult, run_experiment

__all__ = ["Experiment", "ExperimentError", "RunError", "RunResult", "load_experiment", "parse_experiment",
           "quick_experiment", "run_experiment"]
