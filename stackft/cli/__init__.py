"""The ``stackft`` command line: train, eval, demo, predict, export, build-ext, cache, trials, trials-report, ensemble.

The commands live in :mod:`stackft.cli.train` (train, eval, demo), :mod:`stackft.cli.predict` (predict),
:mod:`stackft.cli.export` (export), :mod:`stackft.cli.cache`
(build-ext, cache info|verify|build) and :mod:`stackft.cli.trials` (trials, trials-report,
ensemble); what they share (TrainConfig options, errors, dispatch) in :mod:`stackft.cli.args`.
``stackft train`` takes every :class:`~stackft.config.TrainConfig` field as ``--field-name``.
"""

from __future__ import annotations

import sys


def build_parser():
    """The ``stackft`` parser: ``--version`` and every command."""
    # imported here, not at the top: `python -m stackft.cli.cache` must find its module not yet loaded
    from stackft.cli import args, cache, export, predict, train, trials

    return args.command_parser(train.register, predict.register, export.register, cache.register, trials.register)


def main(argv=None) -> int:
    """The ``stackft`` console script; returns the exit code (2: a usage or input error, one line)."""
    from stackft.cli.args import run

    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
