"""CLI commands that train and evaluate one model: ``train``, ``eval``, ``demo``, ``demo-data``.

``register(subparsers)`` adds them to the ``stackft`` console script's subparsers; each command
sets ``func(args) -> int`` (the exit code). ``stackft train`` takes every
:class:`~stackft.config.TrainConfig` field as ``--field-name``.
"""

from __future__ import annotations

import argparse
import json

from stackft.cli.args import add_command, add_config_args, training_config
from stackft.cli.config_file import add_config_file_option
from stackft.config import ON_ERROR


def register(subparsers) -> None:
    t = add_command(subparsers, "train", cmd_train, help="train one configuration (all TrainConfig fields are options)")
    groups = add_config_args(t)
    groups["optimisation"].add_argument("--seed", type=int, default=None,
                                        help="set both --init-seed and --data-seed (wins over either)")
    run = groups["running"].add_mutually_exclusive_group()
    run.add_argument("--resume", action="store_true", help="continue the run in OUTPUT_DIR from its last/ checkpoint")
    run.add_argument("--overwrite", action="store_true",
                     help="OUTPUT_DIR holds a run: delete it and start again (without --resume or --overwrite, "
                          "a folder that holds a run is refused)")
    add_config_file_option(t, groups["running"])  # --config FILE (YAML or JSON); options override it

    e = add_command(subparsers, "eval", cmd_eval, help="evaluate a saved checkpoint (e.g. RUN/best) on a data file")
    e.add_argument("checkpoint", help="a checkpoint folder (RUN/best, RUN/phase1_end, ...)")
    e.add_argument("--data", required=True, help="data file in the task's format")
    e.add_argument("--split", default="validation", help="split name for datasets sources (default: %(default)s)")
    e.add_argument("--batch-size", type=int, default=64, help="evaluation batch size (default: %(default)s)")
    e.add_argument("--device", default="cpu", help="auto | cpu | cuda | cuda:N (default: %(default)s)")
    e.add_argument("--on-error", choices=ON_ERROR, default="raise",
                   help="malformed lines: stop or skip (default: %(default)s)")

    d = add_command(subparsers, "demo", cmd_demo,
                    help="finetune-only vs stack-and-finetune on the bundled CoNLL excerpt")
    d.add_argument("--output-dir", default="runs/demo", help="folder of both runs and the plot (default: %(default)s)")
    d.add_argument("--encoder", default=None, help="HF hub id or local folder (default: packaged all-MiniLM-L6-v2)")
    d.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: %(default)s)")
    d.add_argument("--quick", action="store_true", help="a much smaller run (smoke test)")
    d.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="show progress bars (evaluation lines and summaries print either way)")

    x = add_command(subparsers, "demo-data", cmd_demo_data,
                    help="write the bundled data as plain files: the CoNLL-2003 excerpt and the synthetic toy "
                         "pairs and classification sets the README's commands use")
    x.add_argument("folder", nargs="?", default="data", help="where to write them (default: %(default)s)")
    x.add_argument("--overwrite", action="store_true", help="replace files that exist with other contents")


def cmd_train(args) -> int:
    cfg = training_config(args)
    if args.seed is not None:
        cfg.init_seed = cfg.data_seed = args.seed
    if cfg.handoff == "search":  # resumable by itself: a second call continues where it stopped
        from stackft.studies.handoff import search_handoff

        report = search_handoff(cfg, out_dir=cfg.output_dir, candidates=cfg.handoff_candidates,
                                probe_fraction=cfg.handoff_probe, choice=cfg.handoff_choice, z=cfg.handoff_z)
        print(json.dumps({k: report[k] for k in ("candidates", "probes", "decision", "chosen", "final_run", "total")},
                         indent=2, default=str))
        return 0
    from stackft.training.trainer import Trainer

    summary = Trainer(cfg).fit(resume=args.resume, overwrite=args.overwrite)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_eval(args) -> int:
    from stackft.data.labels import LabelVocab
    from stackft.data.pipeline import check_source, encode_examples, read_examples
    from stackft.tasks import get_task
    from stackft.training.evaluation import evaluate
    from stackft.training.preflight import check_device
    from stackft.training.trainer import load_trained

    check_device(args.device)  # before loading anything
    check_source(args.data)
    model, meta = load_trained(args.checkpoint, device=args.device)
    task = get_task(meta["task"])
    vocab = LabelVocab.from_list(meta["labels"])
    examples = read_examples(task.name, args.data, split=args.split, on_error=args.on_error)
    ds = encode_examples(task, examples, model.encoder.tokenizer, vocab, max_length=meta["max_length"],
                         pair_mode=meta["pair_mode"], path=args.data)
    metrics = evaluate(model, ds, task, vocab, batch_size=args.batch_size)
    if task.name != "ner" and len(vocab) == 2:
        metrics["f1_positive_class"] = vocab.decode(1)  # what "f1" is the F1 of
    print(json.dumps({"checkpoint": str(args.checkpoint), "data": str(args.data), "n": len(ds), **metrics}, indent=2))
    return 0


def cmd_demo(args) -> int:
    from stackft.studies.demo import run_demo
    from stackft.training.preflight import check_device

    check_device(args.device)
    run_demo(output_dir=args.output_dir, encoder=args.encoder, quick=args.quick, device=args.device,
             progress=args.progress)
    return 0


def cmd_demo_data(args) -> int:
    from stackft.studies.demo import export_demo_data

    for name, path in export_demo_data(args.folder, overwrite=args.overwrite).items():
        print(f"{path}  ({name})")
    print(f"CoNLL-2003 excerpt: research use only; toy/: synthetic, made up by stackft (see {args.folder}/NOTICE.md)")
    return 0
