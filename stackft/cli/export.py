"""``stackft export MODEL OUT``: a self-contained model folder that loads back with one call.

See :mod:`stackft.training.export` for the folder (safetensors weights, config, tokenizer, label
map, model card) and for when a plain-transformers ``hf/`` folder is written beside it.
"""

from __future__ import annotations

import json

from stackft.cli.args import add_command

#: stackft.training.export.TRANSFORMERS_MODES
TRANSFORMERS_MODES = ("auto", "yes", "no")


def register(subparsers) -> None:
    e = add_command(subparsers, "export", cmd_export,
                    help="write a self-contained model folder (weights, config, tokenizer, labels, model card)")
    e.add_argument("model", help="a checkpoint (RUN/best) or a run folder (its best/)")
    e.add_argument("out", help="the folder to write")
    e.add_argument("--transformers", choices=TRANSFORMERS_MODES, default="auto",
                   help="also write OUT/hf, a plain transformers AutoModelFor*Classification folder: auto (where "
                        "the model maps onto one exactly, e.g. finetune-only classification; otherwise say why), "
                        "yes (fail when it does not), no (default: %(default)s)")
    e.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")


def cmd_export(args) -> int:
    from stackft.cli.args import CommandError
    from stackft.training.export import NotRepresentable, export_model

    try:
        report = export_model(args.model, args.out, transformers=args.transformers, overwrite=args.overwrite)
    except FileExistsError as exc:
        raise CommandError(str(exc)) from None
    except NotRepresentable as exc:
        raise CommandError(f"no transformers folder: {exc}") from None
    print(json.dumps(report, indent=2))
    return 0
