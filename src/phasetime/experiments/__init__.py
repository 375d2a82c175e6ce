"""Experiments: files that declare sweeps and data sets, the models they load, and the
driver and executors that run their cells into a results directory.

    exp = phasetime.experiments.load_experiment("examples/latency.yaml")
    result = phasetime.experiments.run_experiment(exp, "results/latency")

Above :mod:`phasetime.core` and :mod:`phasetime.results`; beside :mod:`phasetime.analysis`,
which it never imports.
"""

from __future__ import annotations

from .driver import RunResult, run_experiment
from .quick import quick_experiment
from .spec import Experiment, ExperimentError, load_experiment, parse_experiment
from .validate import RunError

__all__ = ["Experiment", "ExperimentError", "RunError", "RunResult", "load_experiment", "parse_experiment",
           "quick_experiment", "run_experiment"]
