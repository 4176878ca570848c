"""CLI commands for seed studies and ensembles: ``trials``, ``trials-report``, ``ensemble``.

``register(subparsers)`` adds them to the ``stackft`` console script's subparsers; each command
sets ``func(args) -> int``. ``python -m stackft.cli.trials ...`` runs them alone.

    stackft trials --task classification --train-path data.csv --strategy finetune-only \\
        --init-seeds 0,1,2,3,4 --data-seeds 0,1 --out runs/seeds-ft --plot
    stackft trials ... --early-discard 10,0.25,2        # Dodge et al.: start t, judge at f, keep p
    stackft trials ... --strategy eh-ft --phase1-select 10,2 [--baseline runs/seeds-ft]
    stackft trials-report runs/seeds-ft [runs/seeds-ehft ...] [--plot FILE] [--x time]
    stackft ensemble runs/a runs/b runs/c --data dev.csv [--vote soft|hard]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stackft.cli.args import CommandError, add_command, add_config_args, command_parser, run, training_config


def _int_list(s: str) -> list[int]:
    try:
        out = [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None
    if not out:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return out


def _seed_list(s: str) -> list[int]:
    """``0,1,2`` or a range ``0-9``."""
    if "-" in s.strip().lstrip("-") and "," not in s:
        a, b = s.split("-", 1)
        try:
            return list(range(int(a), int(b) + 1))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected N-M or comma-separated integers, got {s!r}") from None
    return _int_list(s)


def _early_discard(s: str) -> tuple[int, float, int]:
    parts = s.split(",")
    try:
        t, f, p = int(parts[0]), float(parts[1]), int(parts[2])
        if len(parts) != 3:
            raise ValueError
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"--early-discard takes t,f,p (e.g. 10,0.25,2), got {s!r}") from None
    return t, f, p


def _phase1_select(s: str) -> tuple[int, int]:
    parts = s.split(",")
    try:
        k, keep = (int(x) for x in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--phase1-select takes k,keep (e.g. 10,2), got {s!r}") from None
    return k, keep


#: TrainConfig fields each trial sets itself, from --init-seeds, --data-seeds and --out
_PER_TRIAL = ("init_seed", "data_seed", "output_dir")


def register(subparsers) -> None:
    t = add_command(subparsers, "trials", cmd_trials,
                    help="seed study: one configuration over a grid of init x data seeds")
    add_config_args(t, exclude=_PER_TRIAL)
    g = t.add_argument_group("seed study", "every trial trains the configuration above with its own seeds, "
                                           "in OUT/trial-i<init>-d<data>")
    g.add_argument("--init-seeds", "--init-seed", dest="init_seeds", type=_seed_list, default=[0], metavar="SEEDS",
                   help="head-init seeds: 0,1,2 or 0-9 (default: 0)")
    g.add_argument("--data-seeds", "--data-seed", dest="data_seeds", type=_seed_list, default=[0], metavar="SEEDS",
                   help="data-order seeds: 0,1 or 0-4 (default: 0)")
    g.add_argument("--out", "--output-dir", dest="out", required=True,
                   help="study folder (trials.jsonl, trial-i*-d*/); rerun to resume")
    g.add_argument("--early-discard", type=_early_discard, default=None, metavar="t,f,p",
                   help="start the first t trials, judge them after fraction f of training, continue the best p")
    g.add_argument("--phase1-select", type=_phase1_select, default=None, metavar="k,keep",
                   help="two-phase strategies: phase 1 for the first k trials, phase 2 for the best keep heads "
                        "(gap rule, then dev score)")
    g.add_argument("--fill", action="store_true",
                   help="--phase1-select: fill places left by the gap rule with the smallest-gap heads")
    g.add_argument("--baseline", default=None, help="--phase1-select: a finetune-only study folder to compare "
                                                     "against at equal compute")
    g.add_argument("--cost", choices=["time", "steps"], default="time",
                   help="compute unit of the comparison (default: %(default)s)")
    g.add_argument("--plot", action="store_true", help="write OUT/expected_max.png")

    r = add_command(subparsers, "trials-report", cmd_trials_report,
                    help="mean ± std, expected max table and plot of seed studies")
    r.add_argument("dirs", nargs="+", help="study folders (one line per folder in the plot)")
    r.add_argument("--plot", default=None, help="PNG path (default: DIR/expected_max.png of the first folder)")
    r.add_argument("--no-plot", action="store_true", help="do not write a plot")
    r.add_argument("--x", choices=["n", "time"], default="n", help="plot x axis: trials, or n x mean trial seconds")
    r.add_argument("--without-replacement", action="store_true",
                   help="expected max of n distinct trials (allentune's C(i,n)/C(N,n) form)")

    e = add_command(subparsers, "ensemble", cmd_ensemble,
                    help="soft/hard-vote ensemble of trained checkpoints on a data file")
    e.add_argument("model_dirs", nargs="+", help="checkpoint folders (RUN/best) or run folders")
    e.add_argument("--data", required=True, help="data file in the task's format")
    e.add_argument("--vote", choices=["soft", "hard"], default="soft",
                   help="soft: average the members' class probabilities; hard: majority of their predictions "
                        "(default: %(default)s)")
    e.add_argument("--split", default="validation", help="split name for datasets sources (default: %(default)s)")
    e.add_argument("--batch-size", type=int, default=64, help="evaluation batch size (default: %(default)s)")
    e.add_argument("--device", default="cpu", help="auto | cpu | cuda | cuda:N (default: %(default)s)")
    e.add_argument("--predictions", default=None, help="also write the ensemble's predictions (JSON lines) here")


def cmd_trials(args) -> int:
    if args.early_discard and args.phase1_select:
        raise CommandError("choose --early-discard or --phase1-select, not both")
    cfg = training_config(args)
    from stackft import studies as trials

    out = Path(args.out)
    if args.phase1_select:
        k, keep = args.phase1_select
        res = trials.run_phase1_then_select(cfg, init_seeds=args.init_seeds, data_seeds=args.data_seeds, k=k,
                                            keep=keep, out_dir=out, fill=args.fill, baseline=args.baseline,
                                            cost=args.cost)
        print(json.dumps({"selection": res["selection"], "table": res["table"],
                          "compute": {k: v for k, v in res["compute"].items() if k != "per_trial"}},
                         indent=2, default=str))
        summaries = res["trials"]
    else:
        summaries = trials.run_trials(cfg, init_seeds=args.init_seeds, data_seeds=args.data_seeds, out_dir=out,
                                      early_discard=args.early_discard)
    for s in summaries:
        if s is None:
            continue
        best = "-" if s.get("best_score") is None else f"{s['best_score']:.4f}"
        print(f"{s['trial']:<20} {s['status']:<13} best {best}  steps {s.get('steps')}  time {s.get('time', 0):.1f}s")
    try:
        print(trials.report(out, plot=out / "expected_max.png" if args.plot else None))
    except FileNotFoundError:
        pass
    return 0


def cmd_trials_report(args) -> int:
    from stackft import studies as trials

    plot = None if args.no_plot else (args.plot or Path(args.dirs[0]) / "expected_max.png")
    print(trials.report(args.dirs, plot=plot, x=args.x, replacement=not args.without_replacement))
    return 0


def cmd_ensemble(args) -> int:
    from stackft.studies.ensemble import ensemble_predict

    res = ensemble_predict(args.model_dirs, args.data, vote=args.vote, batch_size=args.batch_size,
                           device=args.device, split=args.split)
    if args.predictions:
        with open(args.predictions, "w") as f:
            for pred in res["predictions"]:
                f.write(json.dumps(pred) + "\n")
    out = {k: v for k, v in res.items() if k not in ("predictions", "probs")}
    out["data"] = str(args.data)
    print(json.dumps(out, indent=2, default=str))
    return 0


def main(argv=None) -> int:
    """These commands alone (the ``stackft`` console script has them too)."""
    return run(command_parser(register), argv)


if __name__ == "__main__":
    sys.exit(main())
