"""CLI commands for the extension and the feature cache: ``build-ext``, ``cache list|clean|info|verify|build``.

``register(subparsers)`` adds them to the ``stackft`` console script's subparsers; each command
sets ``func(args) -> int`` (the exit code). ``python -m stackft.cli.cache ...`` runs them alone.
"""

from __future__ import annotations

import json
import sys

from stackft.cli.args import CommandError, add_command, add_config_args, command_parser, run, training_config
from stackft.cli.config_file import add_config_file_option


def register(subparsers) -> None:
    p = add_command(subparsers, "build-ext", cmd_build_ext, help="prebuild the stackft C++/CUDA extension")
    p.add_argument("--quiet", action="store_true", help="hide the compiler log")

    c = subparsers.add_parser("cache", help="frozen-encoder feature cache tools")
    cs = c.add_subparsers(dest="cache_cmd", metavar="{list,clean,info,verify,build}")
    cs.required = True
    ls = add_command(cs, "list", cmd_list, help="the caches under the cache folder: size, dtype, sequences, age")
    cl = add_command(cs, "clean", cmd_clean,
                     help="delete caches (all, or those built more than --older-than days ago) and the leftovers "
                          "of interrupted builds; a run rebuilds what it needs")
    for sub in (ls, cl):
        sub.add_argument("--cache", default="auto", metavar="FOLDER",
                         help="the cache folder: auto ($STACKFT_CACHE_DIR, else ~/.cache/stackft/features) or a "
                              "folder, as for stackft train --cache (default: %(default)s)")
    cl.add_argument("--older-than", type=float, default=None, metavar="DAYS",
                    help="only caches built more than DAYS days ago (default: all)")
    cl.add_argument("--dry-run", action="store_true", help="say what would be deleted, delete nothing")
    i = add_command(cs, "info", cmd_info, help="print a cache's header, sizes and bytes/token")
    i.add_argument("path", help="a cache folder (stackft cache list shows them)")
    v = add_command(cs, "verify", cmd_verify, help="check a cache's checksums (exit 1 on failure)")
    v.add_argument("path", help="a cache folder (stackft cache list shows them)")
    b = add_command(cs, "build", build_cache_cli,
                    help="encode a task's data once: the caches `stackft train` with the same options reads")
    groups = add_config_args(b)
    add_config_file_option(b, groups["running"])  # the same --config FILE as stackft train


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
    if args.cache == "off":
        raise CommandError("--cache off makes no cache")
    cfg = training_config(args)
    from stackft.cache.build import cache_root, split_caches
    from stackft.training.trainer import Trainer

    trainer = Trainer(cfg)
    caches = split_caches(trainer.encoder, trainer.data, root=cache_root(cfg.cache), dtype=cfg.cache_dtype,
                          batch_size=cfg.eval_batch_size, device=trainer.device, progress=cfg.progress)
    for split, c in caches.items():
        print(f"{split}: {c.path} ({len(c)} sequences, {c.total_tokens} tokens, {c.dtype}, {c.nbytes / 2**20:.1f} MiB)")
    return 0


def _cache_folder(setting: str):
    from stackft.cache.build import cache_root

    if setting == "off":
        raise CommandError("--cache off names no cache folder")
    return cache_root(setting)


def _dir_bytes(path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _caches(root):
    """(folder, FeatureCache or None, problem) for every cache-like folder under ``root``, by name."""
    from stackft.cache.format import HEADER, CacheError, FeatureCache

    out = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not (d / HEADER).exists():
            continue  # not a stackft cache: never touched
        try:
            out.append((d, FeatureCache.open(d), None))
        except CacheError as e:
            out.append((d, None, str(e)))
    return out


def _age_days(cache, folder) -> float:
    import datetime
    import time

    created = (cache.header.get("created") if cache is not None else None) or None
    try:
        t = datetime.datetime.fromisoformat(str(created)).timestamp()
    except (TypeError, ValueError):
        t = (folder / "header.json").stat().st_mtime
    return (time.time() - t) / 86400


def cmd_list(args) -> int:
    from stackft import _fs

    root = _cache_folder(args.cache)
    print(f"cache folder: {root}")
    if not root.is_dir():
        print("(empty: no cache built yet)")
        return 0
    total = 0
    rows = _caches(root)
    for d, cache, problem in rows:
        size = _dir_bytes(d)
        total += size
        if cache is None:
            print(f"  {d.name:<24} {_fs.human_bytes(size):>10}  invalid: {problem}")
            continue
        enc = str(cache.header.get("encoder") or "?")
        print(f"  {d.name:<24} {_fs.human_bytes(size):>10}  {cache.dtype:<5} {len(cache):>8,} sequences "
              f"{cache.total_tokens:>10,} tokens  {_age_days(cache, d):6.1f} days old  encoder {enc[-40:]}")
    leftovers = [p for p in root.iterdir() if p.name.startswith(".") and _fs.parse_temp(p.name)]
    extra = f", {len(leftovers)} leftovers of interrupted builds" if leftovers else ""
    print(f"{len(rows)} caches, {_fs.human_bytes(total)}{extra} (stackft cache clean deletes them)")
    return 0


def cmd_clean(args) -> int:
    import shutil

    from stackft import _fs

    root = _cache_folder(args.cache)
    if not root.is_dir():
        print(f"cache folder: {root} (empty: nothing to delete)")
        return 0
    doomed = [(d, _dir_bytes(d)) for d, cache, _ in _caches(root)
              if args.older_than is None or _age_days(cache, d) > args.older_than]
    # leftovers of builds whose process is gone (a live build's temporary folder is left alone)
    doomed += [(p, _dir_bytes(p)) for p in root.iterdir()
               if p.is_dir() and p.name.startswith(".") and _fs.parse_temp(p.name) and _fs.is_stale(p)]
    freed = 0
    for d, size in doomed:
        print(f"{'would delete' if args.dry_run else 'deleting'} {d} ({_fs.human_bytes(size)})")
        if not args.dry_run:
            shutil.rmtree(d, ignore_errors=True)
        freed += size
    what = "would free" if args.dry_run else "freed"
    print(f"{len(doomed)} folders, {what} {_fs.human_bytes(freed)} in {root}")
    return 0


def main(argv=None) -> int:
    """These commands alone (the ``stackft`` console script has them too)."""
    return run(command_parser(register), argv)


if __name__ == "__main__":
    sys.exit(main())
