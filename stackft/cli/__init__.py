"""The ``stackft`` command line: train, eval, demo, build-ext, cache.

``stackft train`` takes every :class:`~stackft.config.TrainConfig` field as ``--field-name``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import MISSING, fields

from stackft.config import TrainConfig

_HELP = {
    "task": "ner | classification | pairs (aliases: conll, yahoo, qqp)",
    "strategy": "finetune-only | stack-only | stack-and-finetune | lp-ft | eh-ft",
    "head": "fc | linear | bilstm | highway-lstm | densenet | bimpm | bimpm-noctx | sim-transformer (default: per task/strategy)",
    "head_options": "JSON object of head options, e.g. '{\"perspectives\": 10}'",
    "encoder": "HF hub id or local folder (default: packaged all-MiniLM-L6-v2)",
    "layers": "comma-separated hidden-state indices to average (default -1, the last)",
    "train_path": "training data file (CoNLL / TSV / CSV / json / parquet) or a datasets hub id",
    "dev_path": "dev file; without one a stratified split of the training file is used",
    "pair_mode": "joint | siamese pair encoding (default: from the head)",
    "dev_size": "dev split size (count or fraction) when no dev file is given",
    "max_train": "subsample the training set to this many examples",
    "max_dev": "subsample the dev set to this many examples",
    "stop_mode": "phase-1 stop rule: gap | val_plateau | fixed",
    "gap_tol": "phase-1 stops when train - dev score exceeds this",
    "on_error": "bad input lines: raise (stop at file:line: problem) | skip (drop and count them, warn once)",
    "cache": "feature cache for frozen-encoder phases: auto | off | FOLDER",
    "cache_dtype": "fp32 | fp16 | bf16 | int8",
    "cache_placement": "GPU runs: auto | device (whole cache in GPU memory) | pinned (page-locked host RAM, "
                       "read over PCIe, overlapped) | mmap (host copy of each batch's rows); CPU runs ignore it",
    "cache_prefetch": "batches of cached features gathered ahead, on a side CUDA stream on a GPU "
                      "(default: 2 on a GPU, 0 on CPU, where there is nothing to overlap)",
    "schedule": "bert_tf | linear_hf | constant | cosine",
    "optimizer": "bert_adam (no bias correction) | adamw | torch_adamw",
    "clip_mode": "global | per_tensor",
    "device": "auto | cpu | cuda | cuda:N",
    "output_dir": "run folder (checkpoints, metrics.jsonl, summary.json)",
    "max_steps_this_run": "checkpoint and exit after this many steps (resume with --resume)",
}


def _parse_layers(s: str) -> tuple:
    try:
        return tuple(int(x) for x in s.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--layers takes comma-separated integers, got {s!r}") from None


def _parse_json_dict(s: str) -> dict:
    try:
        d = json.loads(s)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"--head-options must be a JSON object: {exc}") from None
    if not isinstance(d, dict):
        raise argparse.ArgumentTypeError("--head-options must be a JSON object")
    return d


def _int_or_float(s: str):
    """``--dev-size 1000`` (a count) or ``--dev-size 0.1`` (a fraction)."""
    try:
        return int(s)
    except ValueError:
        return float(s)


def _opt_type(default, name):
    if name == "layers":
        return _parse_layers
    if name == "head_options":
        return _parse_json_dict
    if isinstance(default, bool):
        return None
    if isinstance(default, int):
        return int
    if isinstance(default, float):
        return float
    if name == "dev_size":
        return _int_or_float
    if name in ("max_train", "max_dev", "max_tokens", "max_steps_this_run", "stop_after_phase"):
        return int
    if name == "phase2_head_lr":
        return float
    return str


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """One ``--field-name`` option per TrainConfig field (``--no-progress`` for the flag)."""
    # argparse takes "-2,-1" for an option unless it looks like a negative number; let
    # comma-separated negative layer lists (`--layers -2,-1`) count as numbers too.
    parser._negative_number_matcher = re.compile(r"^-\d+(,-?\d+)*$|^-\d*\.\d+$")
    for f in fields(TrainConfig):
        default = f.default if f.default is not MISSING else f.default_factory()
        flag = "--" + f.name.replace("_", "-")
        if isinstance(default, bool):
            parser.add_argument("--no-" + f.name.replace("_", "-"), dest=f.name, action="store_false",
                                default=default, help=f"turn off {f.name}")
            continue
        parser.add_argument(flag, dest=f.name, type=_opt_type(default, f.name), default=default,
                            help=_HELP.get(f.name, "") + f" (default: {default})")


def config_from_args(args) -> TrainConfig:
    return TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})


def cmd_train(args) -> int:
    from stackft.training.trainer import Trainer

    cfg = config_from_args(args)
    if cfg.train_path is None:
        raise ValueError("--train-path is required")
    if args.seed is not None:
        cfg.init_seed = cfg.data_seed = args.seed
    summary = Trainer(cfg).fit(resume=args.resume)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_eval(args) -> int:
    from stackft.data.labels import LabelVocab
    from stackft.data.pipeline import encode_examples, read_examples
    from stackft.tasks import get_task
    from stackft.training.evaluation import evaluate
    from stackft.training.trainer import load_trained

    model, meta = load_trained(args.checkpoint, device=args.device)
    task = get_task(meta["task"])
    vocab = LabelVocab.from_list(meta["labels"])
    examples = read_examples(task.name, args.data, split=args.split, on_error=args.on_error)
    ds = encode_examples(task, examples, model.encoder.tokenizer, vocab, max_length=meta["max_length"],
                         pair_mode=meta["pair_mode"], path=args.data)
    metrics = evaluate(model, ds, task, vocab, batch_size=args.batch_size)
    print(json.dumps({"checkpoint": str(args.checkpoint), "data": str(args.data), "n": len(ds), **metrics}, indent=2))
    return 0


def cmd_demo(args) -> int:
    from stackft.studies.demo import run_demo

    run_demo(output_dir=args.output_dir, encoder=args.encoder, quick=args.quick, device=args.device)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stackft", description="Stack-and-finetune training of BERT-style encoders")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train one configuration (all TrainConfig fields are options)")
    add_config_args(t)
    t.add_argument("--seed", type=int, default=None, help="set both --init-seed and --data-seed")
    t.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a saved checkpoint (e.g. RUN/best) on a data file")
    e.add_argument("checkpoint")
    e.add_argument("--data", required=True, help="data file in the task's format")
    e.add_argument("--split", default="validation", help="split name for datasets sources")
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--device", default="cpu")
    e.add_argument("--on-error", choices=["raise", "skip"], default="raise", help="malformed lines: stop or skip")
    e.set_defaults(func=cmd_eval)

    d = sub.add_parser("demo", help="finetune-only vs stack-and-finetune on the bundled CoNLL excerpt")
    d.add_argument("--output-dir", default="runs/demo")
    d.add_argument("--encoder", default=None)
    d.add_argument("--device", default="auto")
    d.add_argument("--quick", action="store_true", help="a much smaller run (smoke test)")
    d.set_defaults(func=cmd_demo)

    from stackft.cli import cache as cli_cache
    from stackft.cli import trials as cli_trials

    cli_cache.register(sub)
    cli_trials.register(sub)
    return p


def main(argv=None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as exc:
        # DataError is a ValueError: bad input ends with one clear line, not a traceback
        print(f"stackft {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
