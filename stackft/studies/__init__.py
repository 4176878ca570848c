"""Studies over many runs: seed grids, early discarding, phase-1 selection, expected max, ensembles.

- :mod:`~stackft.studies.study`: :class:`Study` (a study folder, its ``trials.jsonl``, trial summaries).
- :mod:`~stackft.studies.runner`: :func:`run_trials` (a seed grid, optional early discarding).
- :mod:`~stackft.studies.phase1_select`: :func:`run_phase1_then_select`.
- :mod:`~stackft.studies.expected`: expected max of n trials (Dodge et al. 2019).
- :mod:`~stackft.studies.reporting`, :mod:`~stackft.studies.plots`: text reports and plots.
- :mod:`~stackft.studies.ensemble`, :mod:`~stackft.studies.demo`: voting ensembles; ``stackft demo``.

Everything ``stackft.trials`` offered in 0.1 is importable from here.
"""

from stackft.studies.expected import expected_max, expected_max_curve, expected_max_per_compute
from stackft.studies.phase1_select import run_phase1_then_select, select_heads
from stackft.studies.plots import plot_expected_max, plot_learning_curves
from stackft.studies.reporting import report
from stackft.studies.runner import rank_for_discard, run_trials
from stackft.studies.study import (
                                   DONE_STATUSES,
                                   TRIAL_FILE,
                                   TRIALS_FILE,
                                   Study,
                                   TrialLogger,
                                   load_summaries,
                                   load_trials,
                                   trial_config,
                                   trial_id,
)

__all__ = ["expected_max", "expected_max_curve", "expected_max_per_compute", "run_phase1_then_select",
           "select_heads", "plot_expected_max", "plot_learning_curves", "report", "rank_for_discard", "run_trials",
           "DONE_STATUSES", "TRIAL_FILE", "TRIALS_FILE", "Study", "TrialLogger", "load_summaries", "load_trials",
           "trial_config", "trial_id"]
