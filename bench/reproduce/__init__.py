"""``bench/reproduce``: the Wang et al. 2019 reproduction (see :mod:`.cli` for what it runs).

- :mod:`.plan`: the grid of tasks, cells and seeds, and every cell's TrainConfig;
- :mod:`.run`: resumable execution of the plan (run folders, ensembles, the resume rule);
- :mod:`.report`: the run folders collected into ``docs/results.md``, ``docs/img/`` and a JSON record.

Run it as ``python bench/reproduce.py ...`` or ``python -m bench.reproduce ...``.
"""

from .cli import main

__all__ = ["main"]
