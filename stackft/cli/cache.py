"""CLI commands for the extension and the feature cache: ``build-ext``, ``cache info|verify|build``.

``register(subparsers)`` adds them to the ``stackft`` console script's subparsers; each command
sets ``func(args) -> int`` (the exit code). ``python -m stackft.cli.cache ...`` runs them alone.
"""

from __future__ import annotations

import json
import sys

from stackft.cli.args import CommandError, add_command, add_config_args, command_parser, run, training_config


def register(subparsers) -> None:
    p = add_command(subparsers, "build-ext", cmd_build_ext, help="prebuild the stackft C++/CUDA extension")
    p.add_argument("--quiet", action="store_true", help="hide the compiler log")

    c = subparsers.add_parser("cache", help="frozen-encoder feature cache tools")
    cs = c.add_subparsers(dest="cache_cmd", metavar="{info,verify,build}")
    cs.required = True
    i = add_command(cs, "info", cmd_info, help="print a cache's header, sizes and bytes/token")
    i.add_argument("path")
    v = add_command(cs, "verify", cmd_verify, help="check a cache's checksums (exit 1 on failure)")
    v.add_argument("path")
    b = add_command(cs, "build", build_cache_cli,
                    help="encode a task's data once: the caches `stackft train` with the same options reads")
    add_config_args(b)


def cmd_build_ext(args) -> int:
    from stackft import _ext

    try:
        info = _ext.build(verbose=not args.quiet)
    except Exception as e:
        print(f"stackft build-ext: build failed: {e}", file=sys.stderr)
        return 1
    import torch

    if info.with_cuda:
        cuda = f"included (CUDA {torch.version.cuda})"
    elif not torch.version.cuda:
        cuda = "not included (this torch has no CUDA)"
    else:
        cuda = "not included (no CUDA toolkit found: set CUDA_HOME)"
    print(f"library:      {info.path}")
    print(f"build dir:    {info.build_dir}")
    print(f"CUDA sources: {cuda}")
    print(f"build info:   {info.info}")
    return 0


def _summary(cache) -> dict:
    h = cache.header
    total = cache.total_tokens
    return {
        "path": str(cache.path),
        "dtype": cache.dtype,
        "dim": cache.dim,
        "sequences": len(cache),
        "total_tokens": total,
        "mean_length": round(total / max(len(cache), 1), 2),
        "bytes": cache.nbytes,
        "bytes_per_token": cache.bytes_per_token,
        "vs_fp32": round(cache.bytes_per_token / (4 * cache.dim), 4) if cache.dim else None,
        "fingerprint": cache.fingerprint,
        "layers": h.get("layers"),
        "encoder": h.get("encoder"),
        "format_version": h.get("format_version"),
        "created": h.get("created"),
        "files": h.get("files"),
    }


def cmd_info(args) -> int:
    from stackft.cache.format import CacheError, FeatureCache

    try:
        cache = FeatureCache.open(args.path)
    except CacheError as e:
        print(f"invalid cache: {e}", file=sys.stderr)
        return 1
    print(json.dumps(_summary(cache), indent=2))
    return 0


def cmd_verify(args) -> int:
    from stackft.cache.format import CacheError, FeatureCache

    try:
        cache = FeatureCache.open(args.path, verify=True)
    except CacheError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    print(f"OK: {args.path} ({len(cache)} sequences, {cache.total_tokens} tokens, "
          f"{len(cache.header.get('files', {}))} files checked)")
    return 0


def build_cache_cli(args) -> int:
    """``stackft cache build``: build the caches a ``stackft train`` with the same options would use."""
    cfg = training_config(args)
    if cfg.cache == "off":
        raise CommandError("--cache off makes no cache")
    from stackft.cache.build import cache_root, split_caches
    from stackft.training.trainer import Trainer

    trainer = Trainer(cfg)
    caches = split_caches(trainer.encoder, trainer.data, root=cache_root(cfg.cache), dtype=cfg.cache_dtype,
                          batch_size=cfg.eval_batch_size, device=trainer.device)
    for split, c in caches.items():
        print(f"{split}: {c.path} ({len(c)} sequences, {c.total_tokens} tokens, {c.dtype}, {c.nbytes / 2**20:.1f} MiB)")
    return 0


def main(argv=None) -> int:
    """These commands alone (the ``stackft`` console script has them too)."""
    return run(command_parser(register), argv)


if __name__ == "__main__":
    sys.exit(main())
