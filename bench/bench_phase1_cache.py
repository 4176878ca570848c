"""Phase-1 epoch from the feature cache vs running the frozen encoder every step (CPU or GPU).

BiLSTM head on CoNLL-2003 sentences with the default encoder (all-MiniLM-L6-v2). Measured side
by side in one run:
  - one phase-1 epoch with the live frozen encoder (eval mode, no_grad) + head forward/backward/step;
  - the one-time cache build (encoder once over the training set), per dtype;
  - one phase-1 epoch from the cache, per dtype;
  - for fp32 and int8 caches: phase-1 dev F1 after ``--epochs`` epochs, mean over ``--f1-seeds``
    seeds (each seed the same init, order and dropout for both dtypes), and bytes.

    python bench/bench_phase1_cache.py --train ../shared/data/conll2003/train.txt \
        --dev ../shared/data/conll2003/dev.txt --n-train 2000 --n-dev 500
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from stackft.cache.format import FeatureCache
from stackft.cache.prefetch import prefetch
from stackft.cache.source import CachedFeatures, place
from stackft.config import TrainConfig
from stackft.data.pipeline import load_task_data
from stackft.modeling.encoders import load_encoder, tiny_random_encoder
from stackft.modeling.model import task_loss
from stackft.training.evaluation import evaluate
from stackft.training.loaders import loader, to_device
from stackft.training.optim import BertAdam, build_param_groups
from stackft.training.trainer import build_model, resolve_device


def run_epoch(model, data, features, *, batch_size, device, seed=0, warmup=0, prefetch_depth=0) -> float:
    """One phase-1 epoch; returns seconds. ``features(batch)`` or None for the live encoder.

    ``prefetch_depth`` > 0 gathers that many batches ahead through :func:`stackft.prefetch.prefetch`
    (a side CUDA stream on a GPU), as the trainer does.
    """
    model.freeze_encoder()
    model.train()
    opt = BertAdam(build_param_groups(model, head_lr=1e-3, encoder_lr=0.0), lr=1e-3)

    def step(batch):
        batch = to_device(batch, device)
        feats = features(batch) if features else model.features(batch)
        loss = task_loss(model.forward_features(feats), batch["labels"])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    if warmup:  # untimed, same for every mode: first-call costs (allocator, oneDNN primitives) stay out
        for i, batch in enumerate(loader(data.train, batch_size, model.encoder.pad_id, shuffle=True, seed=12345)):
            if i == warmup:
                break
            step(batch)
    dl = loader(data.train, batch_size, model.encoder.pad_id, shuffle=True, seed=seed)
    if features and prefetch_depth:
        dl = prefetch(dl, features, device, depth=prefetch_depth)
    t = time.perf_counter()
    for batch in dl:
        step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def gpu_placement_rows(*, model_args, data, caches, batch_size, device) -> dict:
    """Cached epoch per placement (GPU memory / pinned host / mmap) with and without prefetching.

    Prefetching gathers the next batches on a side stream: for pinned and mmap caches that hides the
    host->GPU traffic behind the head's kernels; the pinned rows show whether it does.
    """
    rows = {}
    for placement in ("device", "pinned", "mmap"):
        feats = CachedFeatures(place(caches, placement, device), pair_input=False, device=device, placement=placement)
        for depth in (0, 2):
            model = build_model(*model_args).to(device)
            t = run_epoch(model, data, lambda b: feats(b, "train"), batch_size=batch_size, device=device, warmup=3,
                          prefetch_depth=depth)
            rows[f"{placement}, prefetch {depth}"] = t
            print(f"GPU cached epoch, {placement:6s} prefetch {depth}: {t:.3f} s")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", default="../shared/data/conll2003/train.txt")
    ap.add_argument("--dev", default="../shared/data/conll2003/dev.txt")
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--n-dev", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=2, help="phase-1 epochs for the fp32 vs int8 F1 check")
    ap.add_argument("--f1-seeds", type=int, default=3, help="seeds (init, order, dropout) for the F1 check; mean reported")
    ap.add_argument("--dtypes", default="fp32,fp16,int8")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--encoder", default=None,
                    help="HF id or folder (default: the packaged MiniLM), or random:bert-base for a randomly "
                         "initialised BERT-base-shaped encoder (12x768, same tokenizer): the same compute as "
                         "bert-base-uncased, for timing only; its F1 is not meaningful and is not reported")
    ap.add_argument("--out", default=None, help="JSON results file (default bench/results/phase1_cache-<device>.json)")
    args = ap.parse_args()

    device = resolve_device(args.device)
    # random:bert-base: MiniLM's tokenizer is bert-base-uncased's vocabulary, so this is bert-base's compute
    timing_only = args.encoder == "random:bert-base"
    enc = (tiny_random_encoder(768, 12, num_heads=12, intermediate_size=3072) if timing_only
           else load_encoder(args.encoder)).to(device)
    data = load_task_data("ner", args.train, args.dev, tokenizer=enc.tokenizer, max_train=args.n_train, max_dev=args.n_dev)
    cfg = TrainConfig(task="ner", strategy="stack-only", init_seed=0)
    n_tok = sum(data.train.lengths)
    res = {"encoder": args.encoder or "all-MiniLM-L6-v2", "encoder_layers": enc.model.config.num_hidden_layers,
           "encoder_hidden": enc.hidden_size, "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
           "n_train": len(data.train), "n_dev": len(data.dev), "train_tokens": n_tok, "batch_size": args.batch_size}

    model = build_model(cfg, enc, len(data.vocab)).to(device)
    res["live_epoch_s"] = run_epoch(model, data, None, batch_size=args.batch_size, device=device, warmup=3)
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
        epoch_s = run_epoch(model, data, lambda b: feats(b, "train"), batch_size=args.batch_size, device=device,
                            warmup=3)
        row = {"build_s": build_s, "epoch_s": epoch_s, "speedup_vs_live": res["live_epoch_s"] / epoch_s,
               "nbytes": caches["train"].nbytes, "bytes_per_token": caches["train"].nbytes / n_tok}
        if dtype in ("fp32", "int8") and not timing_only:
            # Same init, data order and dropout stream for every dtype: only the features differ.
            f1s = []
            for seed in range(args.f1_seeds):
                torch.manual_seed(seed)
                model = build_model(dataclasses.replace(cfg, init_seed=seed), enc, len(data.vocab)).to(device)
                for e in range(args.epochs):
                    run_epoch(model, data, lambda b: feats(b, "train"), batch_size=args.batch_size, device=device,
                              seed=1000 * seed + e)
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
                                                  batch_size=args.batch_size, device=device)
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
    out = Path(args.out or Path(__file__).parent / "results" / f"phase1_cache-{name}{suffix}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
