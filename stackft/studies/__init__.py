"""Studies over many runs: seed grids, early discarding, phase-1 selection, expected max, ensembles.

- :mod:`~stackft.studies.study`: :class:`Study` (a study folder, its ``trials.jsonl``, trial summaries).
- :mod:`~stackft.studies.runner`: :func:`run_trials` (a seed grid, optional early discarding).
- :mod:`~stackft.studies.phase1_select`: :func:`run_phase1_then_select`.
- :mod:`~stackft.studies.expected`: expected max of n trials (Dodge et al. 2019).
- :mod:`~stackft.studies.reporting`, :mod:`~stackft.studies.plots`: text reports and plots.
- :mod:`~stackft.studies.ensemble`, :mod:`~stackft.studies.demo`: voting ensembles; ``stackft demo``.

Everything ``stackft.trials`` offered in 0.1 is importable from here.
"""

from stackft.studies.expected import (  # noqa: F401
    _baseline_at_budget,
    _check_n,
    _max_weights,
    _sorted_scores,
    expected_max,
    expected_max_curve,
    expected_max_per_compute,
)
from stackft.studies.phase1_select import (  # noqa: F401
    _cost,
    _load_baseline,
    _phase1_probe,
    _phase1_then_select,
    run_phase1_then_select,
    select_heads,
)
from stackft.studies.plots import plot_expected_max  # noqa: F401
from stackft.studies.reporting import report  # noqa: F401
from stackft.studies.runner import _check_early_discard, _run_early_discard, rank_for_discard, run_trials  # noqa: F401
from stackft.studies.study import (  # noqa: F401
    _TRIAL_TRAINER,
    DONE_STATUSES,
    TRIAL_FILE,
    TRIALS_FILE,
    _parse_grid,
    _phase_steps,
    _planned_steps,
    _position,
    _read_json,
    _read_trial_summary,
    _Study,
    _trial_trainer_class,
    _write_json,
    load_summaries,
    load_trials,
    trial_config,
    trial_id,
)
