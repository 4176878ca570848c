"""``stackft predict MODEL --data FILE|-``: labels and probabilities for unlabelled input, as JSON lines.

``MODEL`` is a checkpoint (``RUN/best``), a run folder (its ``best/``) or an export folder
(``stackft export``). The input formats (:mod:`stackft.data.unlabelled`): CoNLL words without tags,
one sentence or text per line, a TSV of pairs, a CSV of texts, or JSON lines; ``--format auto``
picks one from the file name and content. One JSON object per input is written to ``--out``
(default stdout), in input order (:mod:`stackft.training.predict` describes the records); the
progress bar and the closing line go to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from stackft.cli.args import add_command
from stackft.config import ON_ERROR

#: stackft.data.unlabelled.FORMATS (a literal here: building the parser imports nothing heavy)
FORMATS = ("auto", "conll", "lines", "tsv", "csv", "jsonl")


def register(subparsers) -> None:
    p = add_command(subparsers, "predict", cmd_predict,
                    help="labels and probabilities for unlabelled input, as JSON lines")
    p.add_argument("model", help="a checkpoint (RUN/best), a run folder (its best/) or an export folder")
    p.add_argument("--data", required=True, metavar="FILE|-",
                   help="the input, - for stdin: CoNLL words (ner), one sentence or text per line, a TSV of pairs "
                        "(text_a<TAB>text_b[<TAB>id], or the training layout), a CSV of texts, or JSON lines")
    p.add_argument("--format", choices=FORMATS, default="auto",
                   help="the input format (default: %(default)s, from the file name and content)")
    p.add_argument("--out", default="-", metavar="FILE|-", help="where the JSON lines go (default: - = stdout)")
    p.add_argument("--batch-size", type=int, default=64, help="inputs per forward pass (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="auto | cpu | cuda | cuda:N (default: %(default)s)")
    p.add_argument("--on-error", choices=ON_ERROR, default="raise",
                   help="malformed input lines: stop or skip (default: %(default)s)")
    p.add_argument("--digits", type=int, default=None,
                   help="round probabilities to this many decimals (default: full precision)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="show a progress bar on stderr")


def _rounded(rec: dict, digits: int) -> dict:
    def r(v):
        if isinstance(v, float):
            return round(v, digits)
        if isinstance(v, dict):
            return {k: r(x) for k, x in v.items()}
        if isinstance(v, list):
            return [r(x) for x in v]
        return v

    return {k: (r(v) if k == "probs" else v) for k, v in rec.items()}


def cmd_predict(args) -> int:
    from stackft.cli.args import CommandError
    from stackft.data.unlabelled import detect_format, parse_unlabelled, read_source
    from stackft.training.predict import iter_predictions, load_model
    from stackft.training.trainer import resolve_device

    if args.batch_size < 1:
        raise CommandError(f"--batch-size must be >= 1, got {args.batch_size}")
    t0 = time.perf_counter()
    model, meta = load_model(args.model, device=str(resolve_device(args.device)))
    data, name = read_source(args.data)
    fmt = args.format if args.format != "auto" else detect_format(meta["task"], args.data, data)
    examples = parse_unlabelled(meta["task"], data, fmt, name=name, on_error=args.on_error)
    out = sys.stdout if args.out == "-" else open(args.out, "w", encoding="utf-8")
    n = 0
    try:
        for rec in iter_predictions(model, examples, meta=meta, batch_size=args.batch_size,
                                    progress=args.progress):
            if args.digits is not None:
                rec = _rounded(rec, args.digits)
            out.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    finally:
        if out is not sys.stdout:
            out.close()
        else:
            out.flush()
    skipped = f", {examples.skipped} malformed skipped" if getattr(examples, "skipped", 0) else ""
    where = "stdout" if args.out == "-" else args.out
    print(f"stackft predict: {n} {meta['task']} predictions for {name} (read as {fmt}{skipped}) -> {where} "
          f"in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0
