"""Phase-1 epoch from the feature cache vs running the frozen encoder every step (CPU or GPU).

BiLSTM head on CoNLL-2003 sentences with the default encoder (all-MiniLM-L6-v2). Measured side
by side in one run:
  - one phase-1 epoch with the live frozen encoder (eval mode, no_grad) + the head's train step;
  - the one-time cache build (encoder once over the training set), per dtype;
  - one phase-1 epoch from the cache, per dtype;
  - for fp32 and int8 caches: phase-1 dev F1 after ``--epochs`` epochs, mean over ``--f1-seeds``
    seeds (each seed the same init, order and dropout for both dtypes), and bytes.

Every step is the trainer's: :func:`stackft.training.step.train_step` with the param groups,
optimizer and schedule built as ``Trainer._run_phase`` builds them for phase 1 of stack-only
(BERT-Adam at ``phase1_lr``, TF-BERT schedule with 10% warmup over the run's steps, global clip
1.0, autocast per ``--precision``: the ``TrainConfig`` defaults).

    python bench/bench_phase1_cache.py --data-root DATA --n-train 2000 --n-dev 500
    python bench/bench_phase1_cache.py --train DATA/conll2003/train.txt --dev DATA/conll2003/dev.txt
    python bench/bench_phase1_cache.py --demo                # the CoNLL-2003 excerpt bundled with stackft
    python bench/bench_phase1_cache.py --smoke --out /tmp/p1.json   # seconds: tiny random encoder, demo data

``DATA`` holds ``conll2003/train.txt`` and ``conll2003/dev.txt`` (``--data-root`` defaults to
``$STACKFT_DATA``); there is no default data path.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _util as U  # noqa: E402
import torch  # noqa: E402

from stackft.cache.format import FeatureCache  # noqa: E402
from stackft.cache.prefetch import prefetch  # noqa: E402
from stackft.cache.source import CachedFeatures, place  # noqa: E402
from stackft.config import TrainConfig  # noqa: E402
from stackft.data.pipeline import load_task_data  # noqa: E402
from stackft.modeling.encoders import load_encoder, tiny_random_encoder  # noqa: E402
from stackft.training.evaluation import evaluate  # noqa: E402
from stackft.training.loaders import loader  # noqa: E402
from stackft.training.optim import build_param_groups, make_optimizer, make_scheduler  # noqa: E402
from stackft.training.step import train_step  # noqa: E402
from stackft.training.strategies import plan_phases  # noqa: E402
from stackft.training.trainer import build_model, resolve_device, resolve_precision  # noqa: E402

# --smoke: every code path in seconds (tiny random encoder, the bundled excerpt, a few batches);
# its numbers mean nothing
SMOKE = dict(encoder="random:tiny", n_train=32, n_dev=16, batch_size=8, epochs=1, f1_seeds=1, dtypes="fp32,int8")


def phase1_optimizer(model, cfg: TrainConfig, total_steps: int):
    """Param groups, optimizer and schedule of ``cfg``'s first phase, as ``Trainer._run_phase`` builds them."""
    phase = plan_phases(cfg.strategy, cfg)[0]
    groups = build_param_groups(model, head_lr=phase.head_lr, encoder_lr=phase.encoder_lr,
                                weight_decay=cfg.weight_decay, layer_decay=cfg.layer_decay)
    optimizer = make_optimizer(groups, kind=cfg.optimizer, lr=phase.head_lr)
    return optimizer, make_scheduler(optimizer, cfg.schedule, total_steps=total_steps, warmup_proportion=cfg.warmup)


def train_phase1(model, data, features, cfg: TrainConfig, *, device, epochs=1, warmup=0, prefetch_depth=0) -> list[float]:
    """Train phase 1 (frozen encoder) for ``epochs`` epochs; returns the seconds of each epoch.

    ``features(batch)`` reads the cache, or None for the live encoder. The batch order is the
    trainer's for ``cfg.data_seed`` (one loader seeded ``data_seed * 1000``, ``set_epoch`` per
    epoch); optimizer and schedule are built once over all ``epochs``. ``warmup`` untimed steps
    first, with their own optimizer (same for every mode: first-call costs such as the allocator and
    oneDNN primitives stay out of the timings). ``prefetch_depth`` > 0 gathers that many batches
    ahead through :func:`stackft.cache.prefetch.prefetch` (a side CUDA stream on a GPU), as the
    trainer does.
    """
    model.freeze_encoder()
    model.train()
    amp_dtype = resolve_precision(cfg.precision, device)

    def forward(mb):
        return model.forward_features(features(mb) if features else model.features(mb))

    def step(batch, optimizer, scheduler):
        train_step(forward, batch, optimizer, scheduler, grad_accum=cfg.grad_accum, clip=cfg.clip,
                   clip_mode=cfg.clip_mode, amp_dtype=amp_dtype, device=device)

    pad = model.encoder.pad_id
    if warmup:
        dl = loader(data.train, cfg.batch_size, pad, shuffle=True, seed=12345)
        opt, sched = phase1_optimizer(model, cfg, total_steps=warmup)
        for i, batch in enumerate(dl):
            if i == warmup:
                break
            step(batch, opt, sched)
    dl = loader(data.train, cfg.batch_size, pad, shuffle=True, seed=cfg.data_seed * 1000, max_tokens=cfg.max_tokens)
    sampler = dl.batch_sampler
    opt, sched = phase1_optimizer(model, cfg, total_steps=sum(sampler.num_batches(e) for e in range(epochs)))
    times = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        batches = prefetch(dl, features, device, depth=prefetch_depth) if features and prefetch_depth else dl
        t = time.perf_counter()
        for batch in batches:
            step(batch, opt, sched)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return times


def gpu_placement_rows(*, model_args, data, caches, cfg, device) -> dict:
    """Cached epoch per placement (GPU memory / pinned host / mmap) with and without prefetching.

    Prefetching gathers the next batches on a side stream: for pinned and mmap caches that hides the
    host->GPU traffic behind the head's kernels; the pinned rows show whether it does.
    """
    rows = {}
    for placement in ("device", "pinned", "mmap"):
        feats = CachedFeatures(place(caches, placement, device), pair_input=False, device=device, placement=placement)
        for depth in (0, 2):
            model = build_model(*model_args).to(device)
            [t] = train_phase1(model, data, lambda b: feats(b, "train"), cfg, device=device, warmup=3,
                               prefetch_depth=depth)
            rows[f"{placement}, prefetch {depth}"] = t
            print(f"GPU cached epoch, {placement:6s} prefetch {depth}: {t:.3f} s")
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    U.add_data_args(ap)
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--n-dev", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=2, help="phase-1 epochs for the fp32 vs int8 F1 check")
    ap.add_argument("--f1-seeds", type=int, default=3, help="seeds (init, order, dropout) for the F1 check; mean reported")
    ap.add_argument("--dtypes", default="fp32,fp16,int8")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                    help="the trainer's TrainConfig.precision (auto: bf16 autocast on a bf16-capable GPU, else fp32)")
    ap.add_argument("--encoder", default=None,
                    help="HF id or folder (default: the packaged MiniLM), or random:bert-base for a randomly "
                         "initialised BERT-base-shaped encoder (12x768, same tokenizer): the same compute as "
                         "bert-base-uncased, for timing only; its F1 is not meaningful and is not reported; "
                         "random:tiny for a 2 x 32 random BERT (plumbing)")
    ap.add_argument("--smoke", action="store_true",
                    help="seconds, for a plumbing check: " + ", ".join(f"{k}={v}" for k, v in SMOKE.items())
                         + " (options given explicitly win), the bundled data unless --train/--data-root; "
                           "writes to the temp folder unless --out")
    ap.add_argument("--out", default=None, help="JSON results file (default bench/results/phase1_cache-<device>.json)")
    args = ap.parse_args(argv)
    if args.smoke:
        for key, value in SMOKE.items():
            if getattr(args, key) == ap.get_default(key):
                setattr(args, key, value)
        if not (args.train or args.dev or args.data_root):
            args.demo = True
    train_path, dev_path = U.conll_paths(ap, args)

    device = resolve_device(args.device)
    # random:bert-base: MiniLM's tokenizer is bert-base-uncased's vocabulary, so this is bert-base's compute
    timing_only = args.encoder == "random:bert-base"
    if timing_only:
        enc = tiny_random_encoder(768, 12, num_heads=12, intermediate_size=3072)
    elif args.encoder == "random:tiny":
        enc = tiny_random_encoder(32, 2)
    else:
        enc = load_encoder(args.encoder)
    enc = enc.to(device)
    data = load_task_data("ner", train_path, dev_path, tokenizer=enc.tokenizer, max_train=args.n_train,
                          max_dev=args.n_dev)
    cfg = TrainConfig(task="ner", strategy="stack-only", init_seed=0, data_seed=0, batch_size=args.batch_size,
                      precision=args.precision)
    n_tok = sum(data.train.lengths)
    amp = resolve_precision(cfg.precision, device)
    res = {"encoder": args.encoder or "all-MiniLM-L6-v2", "encoder_layers": enc.model.config.num_hidden_layers,
           "encoder_hidden": enc.hidden_size, "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
           "n_train": len(data.train), "n_dev": len(data.dev), "train_tokens": n_tok, "batch_size": args.batch_size,
           "data": {"train": train_path, "dev": dev_path},
           "train_step": {"optimizer": cfg.optimizer, "lr": cfg.phase1_lr, "weight_decay": cfg.weight_decay,
                          "schedule": cfg.schedule, "warmup": cfg.warmup, "clip": cfg.clip, "clip_mode": cfg.clip_mode,
                          "autocast": None if amp is None else str(amp).replace("torch.", "")}}
    if args.smoke:
        res["smoke"] = True

    model = build_model(cfg, enc, len(data.vocab)).to(device)
    [res["live_epoch_s"]] = train_phase1(model, data, None, cfg, device=device, warmup=3)
    print(f"live frozen-encoder epoch: {res['live_epoch_s']:.2f} s")

    tmp = Path(tempfile.mkdtemp(prefix="stackft-bench-"))
    trained, dev_feats = {}, {}
    for dtype in args.dtypes.split(","):
        caches = {}
        t = time.perf_counter()
        for split, ds in (("train", data.train), ("dev", data.dev)):
            caches[split] = FeatureCache.build(enc, ds.sequences(), dtype=dtype, path=tmp / f"{dtype}-{split}",
                                               batch_size=64, device=device, pad_id=enc.pad_id, progress=False)
        build_s = time.perf_counter() - t
        feats = CachedFeatures(caches, pair_input=False, device=device)
        dev_feats[dtype] = feats
        model = build_model(cfg, enc, len(data.vocab)).to(device)
        [epoch_s] = train_phase1(model, data, lambda b: feats(b, "train"), cfg, device=device, warmup=3)
        row = {"build_s": build_s, "epoch_s": epoch_s, "speedup_vs_live": res["live_epoch_s"] / epoch_s,
               "nbytes": caches["train"].nbytes, "bytes_per_token": caches["train"].nbytes / n_tok}
        if dtype in ("fp32", "int8") and not timing_only:
            # Same init, data order and dropout stream for every dtype: only the features differ.
            f1s = []
            for seed in range(args.f1_seeds):
                seed_cfg = dataclasses.replace(cfg, init_seed=seed, data_seed=seed)
                torch.manual_seed(seed)  # the dropout stream, as Trainer.fit seeds it
                model = build_model(seed_cfg, enc, len(data.vocab)).to(device)
                train_phase1(model, data, lambda b: feats(b, "train"), seed_cfg, device=device, epochs=args.epochs)
                f1s.append(evaluate(model, data.dev, data.task, data.vocab, device=device,
                                    features=lambda b: feats(b, "dev"))["f1"])
                trained[dtype, seed] = model
            row["dev_f1_per_seed"] = f1s
            row["dev_f1"] = sum(f1s) / len(f1s)
        res[dtype] = row
        print(f"{dtype:>5}: build {build_s:6.2f} s, cached epoch {epoch_s:6.3f} s "
              f"({row['speedup_vs_live']:.1f}x vs live), {row['bytes_per_token']:.0f} B/token"
              + (f", dev F1 {100 * row['dev_f1']:.2f}" if "dev_f1" in row else ""))
    if device.type == "cuda":
        res["gpu_placement"] = gpu_placement_rows(model_args=(cfg, enc, len(data.vocab)), data=data, caches=caches,
                                                  cfg=cfg, device=device)
    if "fp32" in res and "int8" in res and not timing_only:
        res["int8_bytes_ratio"] = res["int8"]["nbytes"] / res["fp32"]["nbytes"]
        res["int8_f1_delta_points"] = 100 * (res["int8"]["dev_f1"] - res["fp32"]["dev_f1"])
        # Quantisation alone, without training chaos: the fp32-trained heads scored on int8 dev features.
        cross = [evaluate(trained["fp32", s], data.dev, data.task, data.vocab, device=device,
                          features=lambda b: dev_feats["int8"](b, "dev"))["f1"] for s in range(args.f1_seeds)]
        res["fp32_heads_on_int8_dev_delta_points_per_seed"] = [
            100 * (c - f) for c, f in zip(cross, res["fp32"]["dev_f1_per_seed"])]
        print("fp32-trained heads scored on int8 dev features vs fp32 dev features: "
              + ", ".join(f"{d:+.2f}" for d in res["fp32_heads_on_int8_dev_delta_points_per_seed"]) + " points")
        res["int8_f1_delta_points_per_seed"] = [100 * (a - b) for a, b in zip(res["int8"]["dev_f1_per_seed"],
                                                                                res["fp32"]["dev_f1_per_seed"])]
        print(f"int8/fp32 bytes {res['int8_bytes_ratio']:.3f}; int8 - fp32 dev F1 {res['int8_f1_delta_points']:+.2f} "
              f"points (mean of {args.f1_seeds} seeds; per seed "
              + ", ".join(f"{d:+.2f}" for d in res["int8_f1_delta_points_per_seed"]) + ")")
    name = "gpu-" + torch.cuda.get_device_name().replace(" ", "_") if device.type == "cuda" else "cpu"
    suffix = "-random-bert-base" if timing_only else ""
    U.write_json(U.result_path(args.out, f"phase1_cache-{name}{suffix}{'-smoke' if args.smoke else ''}.json",
                               args.smoke), res)
    shutil.rmtree(tmp, ignore_errors=True)
    return res


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
