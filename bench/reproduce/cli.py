"""Reproduce the three experiments of Wang et al. 2019 (arXiv 1907.05338) with the default encoder.

Stack-and-finetune against finetune-only, each cell trained over several seeds, on the data under
``--data-root`` (default ``$STACKFT_DATA``; there is no default path), with the packaged
all-MiniLM-L6-v2 encoder:

- **NER** (``conll2003/train.txt`` / ``conll2003/dev.txt``): finetune-only (fc) vs stack-only
  (bilstm) vs stack-and-finetune (bilstm); entity F1 (+ token accuracy).
- **Yahoo-2** (``yahoo/train.csv``, a fixed stratified dev split): finetune-only (fc) vs
  stack-and-finetune with densenet and with highway-lstm, the soft-vote ensemble of those three per
  seed (:func:`stackft.studies.ensemble.ensemble_predict` on the same dev split), LP-FT and EH-FT
  (LoRA); accuracy.
- **QQP** (``qqp/dev.tsv`` as a 10k pool, split 9k/1k stratified): finetune-only (fc, joint pair
  encoding) vs stack-and-finetune with bimpm, bimpm-noctx and sim-transformer (siamese); accuracy.

The package has three parts: :mod:`.plan` (the grid of cells and their TrainConfigs), :mod:`.run`
(resumable execution: every run has its own folder ``OUT/SCALE/TASK/CELL/trial-i{init}-d{data}/``,
a finished one is skipped, so running the same command again resumes; a folder trained with other
settings stops the script, by the trainer's rule ``TrainConfig.changed_for_resume``) and
:mod:`.report` (``docs/results.md``: mean ± sd and raw scores per cell, expected max of n = 1..N
runs, wall time per phase, a verdict per task; expected-max plots in ``docs/img/``; a JSON record
in ``bench/results/``). Frozen-encoder phases read the feature cache in ``OUT/SCALE/cache``.

    OMP_NUM_THREADS=1 python bench/reproduce.py --data-root DATA --scale cpu   # ~30 min on one core
    python bench/reproduce.py --data-root DATA --scale full --seeds 0-4       # the whole data, on a GPU
    python bench/reproduce.py --data-root DATA --scale cpu --report-only      # rewrite the docs only
    python bench/reproduce.py --data-root DATA --dry-run                      # the plan as JSON, nothing run
    python -m bench.reproduce ...                                             # the same, from the repo root
    python bench/reproduce.py ... --seeds 0-4 --confirm-seeds 5-9 --report-only  # re-score the picked cells

``--scale cpu`` subsamples each task to a few hundred training examples, cuts inputs at 64
tokens, trains 2 epochs in phase 2 and uses smaller stacked heads (see ``plan.BASE``); ``--scale
full`` uses all the data and the library's defaults; ``--scale smoke`` is a plumbing check (a few
dozen examples, one epoch per phase; with ``--encoder random:tiny``, seconds). All selection is on
dev (there is no test split here), and the reported score of a run is its best dev evaluation.

The verdict picks, per task, the best stack-and-finetune cell on the seeds it then scores it on,
which flatters it. ``--confirm-seeds`` names fresh seeds (trained beforehand with ``--seeds
FRESH --cells finetune-only,CELL``) on which the report scores that cell against finetune-only
again and judges the target a second time, without the selection.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shlex
import sys
import time
from pathlib import Path

from .plan import SCALES, parse_seeds, plan_summary, required_files, task_plans, trial_grid
from .report import build_results, write_report
from .run import log, record_invocation, run_task

REPO = Path(__file__).resolve().parents[2]
DATA_ENV = "STACKFT_DATA"
TINY_ENCODER = "random:tiny"


def load_bench_encoder(name: str | None):
    """The encoder every run starts from: the packaged MiniLM (None), a HF id or folder, or
    ``random:tiny`` (a 2 x 32 random BERT with the default tokenizer: plumbing checks only)."""
    from stackft.modeling.encoders import load_encoder, tiny_random_encoder

    if name == TINY_ENCODER:
        return tiny_random_encoder(hidden_size=32, num_layers=2, seed=0)
    return load_encoder(name)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=SCALES, default="cpu")
    ap.add_argument("--seeds", default="0,1,2", help="e.g. 0,1,2 or 0-4 (at least 3 for the report)")
    ap.add_argument("--confirm-seeds", default=None,
                    help="fresh seeds (none of --seeds) on which the report re-scores each task's picked cell "
                         "against finetune-only; train them with --seeds SEEDS --cells finetune-only,CELL")
    ap.add_argument("--grid", action="store_true", help="every (init_seed, data_seed) pair instead of init = data")
    ap.add_argument("--tasks", default="ner,yahoo,qqp")
    ap.add_argument("--cells", default=None, help="train only these cells (comma-separated names; see --dry-run)")
    ap.add_argument("--seeds-first", action="store_true",
                    help="train every cell of a seed before the next seed (default for --scale mid)")
    ap.add_argument("--out", default="runs/reproduce", help="run folders go to OUT/SCALE/TASK/CELL/")
    ap.add_argument("--data-root", default=os.environ.get(DATA_ENV),
                    help="folder with conll2003/, yahoo/ and qqp/ (default: $STACKFT_DATA)")
    ap.add_argument("--encoder", default=None,
                    help=f"HF id or folder (default: the packaged all-MiniLM-L6-v2); {TINY_ENCODER}: a tiny random "
                         "BERT for plumbing checks")
    ap.add_argument("--results-md", default=str(REPO / "docs" / "results.md"))
    ap.add_argument("--img-dir", default=str(REPO / "docs" / "img"))
    ap.add_argument("--json", default=None,
                    help="default bench/results/reproduce-SCALE.json; runs it records whose folders under OUT are "
                         "gone are kept in the new report (marked as recorded)")
    ap.add_argument("--forget-recorded", action="store_true",
                    help="report only the run folders under OUT, not the runs the previous --json recorded")
    ap.add_argument("--report-only", action="store_true", help="train nothing; rewrite the report from OUT")
    ap.add_argument("--no-report", action="store_true")
    ap.add_argument("--dry-run", action="store_true",
                    help="print the plan (cells, their configs, which runs are done) as JSON; train and write nothing")
    ap.add_argument("--note", default="", help="a line about the machine or the run for the report")
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    seeds = parse_seeds(args.seeds)
    pairs = trial_grid(seeds, args.grid)
    confirm_pairs = trial_grid(parse_seeds(args.confirm_seeds), args.grid) if args.confirm_seeds else []
    if {i for i, _ in confirm_pairs} & set(seeds):
        ap.error(f"--confirm-seeds {args.confirm_seeds} overlaps --seeds {args.seeds}: "
                 "seeds that chose a cell cannot confirm it")
    keys = [k.strip() for k in args.tasks.split(",") if k.strip()]
    plans = task_plans(args.scale)
    unknown = set(keys) - set(plans)
    if unknown:
        raise SystemExit(f"--tasks: unknown {sorted(unknown)}; choose from {sorted(plans)}")
    if not args.data_root:
        ap.error(f"no data: pass --data-root DIR or set {DATA_ENV} (a folder holding "
                 + ", ".join(required_files(plans, keys)) + ")")
    out = Path(args.out) / args.scale
    data_root = Path(args.data_root)
    if args.dry_run:
        print(json.dumps(plan_summary(plans, keys, args.scale, pairs, data_root, out, args.encoder), indent=1))
        return 0
    missing = [f for f in required_files(plans, keys) if not (data_root / f).is_file()]
    if missing:
        ap.error(f"--data-root {data_root} (or ${DATA_ENV}): missing {', '.join(missing)}")
    out.mkdir(parents=True, exist_ok=True)

    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    command = " ".join(([f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"] if "OMP_NUM_THREADS" in os.environ else [])
                       + ["python", "bench/reproduce.py"]
                       + [shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])])
    encoder = None
    if not args.report_only:
        started = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
        encoder = load_bench_encoder(args.encoder)
        trained = 0
        for key in keys:
            log(f"task {key}")
            trained += run_task(plans[key], args.scale, pairs, data_root, out, encoder, device, args.encoder,
                                cells=set(args.cells.split(",")) if args.cells else None,
                                seeds_first=args.seeds_first or args.scale == "mid")
        # the wall time of every training invocation, for the report
        record_invocation(out, {"start": started, "wall_s": round(time.perf_counter() - t_start, 1),
                                "command": command, "note": args.note, "runs_trained": trained})

    if args.no_report:
        return 0
    if encoder is None:
        encoder = load_bench_encoder(args.encoder)
    json_path = Path(args.json) if args.json else REPO / "bench" / "results" / f"reproduce-{args.scale}.json"
    previous = None
    if json_path.is_file() and not args.forget_recorded:
        try:
            previous = json.loads(json_path.read_text())
        except json.JSONDecodeError as e:
            raise SystemExit(f"{json_path}:{e.lineno}: not valid JSON ({e.msg}); fix it or pass --forget-recorded")
    results = build_results(scale=args.scale, command=command, note=args.note, seeds=seeds, grid=args.grid,
                            pairs=pairs, plans=plans, keys=keys, data_root=data_root, out=out, encoder=encoder,
                            encoder_name=args.encoder, t_start=t_start, previous=previous,
                            confirm_pairs=confirm_pairs)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=1, default=str))
    write_report(results, Path(args.results_md), Path(args.img_dir))
    log(f"wrote {args.results_md}, {json_path} and plots in {args.img_dir}; "
        f"{results['timing']['invocation_s'] / 60:.1f} min this invocation")
    return 0
