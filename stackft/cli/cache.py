"""CLI commands for the extension and the feature cache: ``build-ext``, ``cache info|verify|build``.

``register(subparsers)`` adds them to the ``stackft`` console script's subparsers; each command
sets ``func(args) -> int`` (the exit code). ``python -m stackft.cli_cache ...`` runs them alone.
"""

from __future__ import annotations

import json
import sys

from stackft.cache.build import cache_root, split_caches


def register(subparsers) -> None:
    p = subparsers.add_parser("build-ext", help="prebuild the stackft C++/CUDA extension")
    p.add_argument("--quiet", action="store_true", help="hide the compiler log")
    p.set_defaults(func=cmd_build_ext)

    c = subparsers.add_parser("cache", help="frozen-encoder feature cache tools")
    cs = c.add_subparsers(dest="cache_cmd", metavar="{info,verify,build}")
    cs.required = True
    i = cs.add_parser("info", help="print a cache's header, sizes and bytes/token")
    i.add_argument("path")
    i.set_defaults(func=cmd_info)
    v = cs.add_parser("verify", help="check a cache's checksums (exit 1 on failure)")
    v.add_argument("path")
    v.set_defaults(func=cmd_verify)
    b = cs.add_parser("build", help="encode a task's data once: the caches `stackft train` with the same options reads")
    from stackft.cli import add_config_args

    add_config_args(b)
    b.set_defaults(func=cmd_build)


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


def cmd_build(args) -> int:
    from stackft.cli.cache import build_cache_cli

    return build_cache_cli(args)


def main(argv=None) -> int:
    """The ``stackft`` console script (which registers these commands)."""
    from stackft.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())


def build_cache_cli(args) -> int:
    """``stackft cache build``: build the caches a ``stackft train`` with the same options would use."""
    from stackft.cli import config_from_args
    from stackft.training.trainer import Trainer

    cfg = config_from_args(args)
    if cfg.train_path is None:
        raise ValueError("--train-path is required")
    if cfg.cache == "off":
        raise ValueError("--cache off makes no cache")
    trainer = Trainer(cfg)
    caches = split_caches(trainer.encoder, trainer.data, root=cache_root(cfg.cache), dtype=cfg.cache_dtype,
                          batch_size=cfg.eval_batch_size, device=trainer.device)
    for split, c in caches.items():
        print(f"{split}: {c.path} ({len(c)} sequences, {c.total_tokens} tokens, {c.dtype}, {c.nbytes / 2**20:.1f} MiB)")
    return 0
