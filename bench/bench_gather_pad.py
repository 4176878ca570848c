"""Benchmark gather_pad (ragged cache -> padded batch) and the cache's bytes per token.

CPU (always): B=64 sequences of mean length 40, d=384, fp16 store -> fp32 batch, side by side:
  extension   torch.ops.stackft_C.gather_pad through stackft.ops.gather_pad
  fallback    stackft.ops.gather_pad_fallback (vectorised pure PyTorch)
  python      the usual loop: slices + pad_sequence + .float() + mask (offsets pre-listed)
Each rep draws a different random batch from a ~130 MB store (bigger than the caches), reps are
interleaved across methods, and the median is reported.

CUDA (when a GPU is present): gather_pad at B=64, T=128, d=768 for bf16 and int8 stores,
bandwidth (bytes read + written) against a measured device-to-device copy, each without
``max_len`` (one host sync per call to read Tmax) and with ``max_len`` (no sync: what
``FeatureCache.gather`` passes), plus the same from a pinned host store.

    python bench/bench_gather_pad.py [--reps 400] [--threads N] [--json out.json]
    python bench/bench_gather_pad.py --smoke --json /tmp/gp.json   # seconds: small stores, 5 reps
    python bench/bench_gather_pad.py --cuda-only --reps 100 --json gp.json   # the GPU part only

``--smoke`` runs every method on small stores (256 sequences, 5 reps; on a GPU 256-sequence
stores, 5 reps) to check the plumbing; its numbers mean nothing. It writes its JSON to the temp
folder unless ``--json``.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.nn.utils.rnn import pad_sequence

from stackft import _ext
from stackft.cache import ops
from stackft.cache.format import FeatureCache

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _util as U  # noqa: E402


def make_store(n, mean_len, d, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(8, 2 * mean_len - 7, (n,), generator=g)  # uniform, mean = mean_len
    offsets = torch.zeros(n + 1, dtype=torch.int64)
    offsets[1:] = lens.cumsum(0)
    total = int(offsets[-1])
    if dtype == torch.int8:
        values = torch.randint(-127, 128, (total, d), generator=g, dtype=torch.int8)
        scales = (torch.rand(total, generator=g) * 0.05).half()
    else:
        values = torch.randn(total, d, generator=g).to(dtype)
        scales = None
    return values, offsets, scales


def python_loop(values, offsets_list, idx_list):
    """Slices, pad in the storage dtype, convert once (the cheapest loop)."""
    seqs = [values[offsets_list[i]:offsets_list[i + 1]] for i in idx_list]
    padded = pad_sequence(seqs, batch_first=True).float()
    lens = torch.tensor([len(s) for s in seqs])
    mask = torch.arange(padded.shape[1])[None, :] < lens[:, None]
    return padded, mask


def python_loop_convert_first(values, offsets_list, idx_list):
    """Slices converted one by one (as a per-sequence dequantise would), then padded."""
    seqs = [values[offsets_list[i]:offsets_list[i + 1]].float() for i in idx_list]
    padded = pad_sequence(seqs, batch_first=True)
    lens = torch.tensor([len(s) for s in seqs])
    mask = torch.arange(padded.shape[1])[None, :] < lens[:, None]
    return padded, mask


LOOP = "python loop: slices, pad_sequence, .float()"


def cpu_bench(reps, clock, B=64, mean_len=40, d=384, n=4096):
    """Median time per batch for every method, all interleaved rep by rep (same conditions)."""
    values, offsets, _ = make_store(n, mean_len, d, torch.float16)
    off_list = offsets.tolist()
    g = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, n, (B,), generator=g) for _ in range(reps)]
    methods = {
        LOOP: lambda i: python_loop(values, off_list, i.tolist()),
        "python loop: slices .float(), pad_sequence": lambda i: python_loop_convert_first(values, off_list, i.tolist()),
        "fallback (vectorised torch)": lambda i: ops.gather_pad_fallback(values, offsets, i),
    }
    if _ext.load() is not None:
        methods["extension (stackft_C)"] = lambda i: ops.gather_pad(values, offsets, i)
        for name, dt in [("bf16", torch.bfloat16), ("int8", torch.int8), ("fp32", torch.float32)]:
            v, o, sc = make_store(n, mean_len, d, dt)
            methods[f"extension, {name} store -> fp32"] = (
                lambda i, v=v, o=o, sc=sc: ops.gather_pad(v, o, i, sc))
    # Reference point, not a method: the bytes any method must move (read the batch's rows from
    # the store, write a padded fp32 output), with rows and output precomputed/preallocated.
    rows = {}
    buf = torch.zeros(B * int((offsets[1:] - offsets[:-1]).max()) * d)  # touched once, reused
    for i in batches:
        st, ln = offsets[i], offsets[i + 1] - offsets[i]
        rows[id(i)] = (torch.repeat_interleave(st, ln) + torch.arange(int(ln.sum()))
                       - torch.repeat_interleave(torch.cat([ln.new_zeros(1), ln.cumsum(0)[:-1]]), ln),
                       buf[: B * int(ln.max()) * d].view(B, -1, d))
    methods["floor: index_select rows + fill output"] = (
        lambda i: (values.index_select(0, rows[id(i)][0]), rows[id(i)][1].fill_(0)))
    ref = methods[LOOP](batches[0])  # same answer first
    for name in [m for m in methods if not m.startswith(("floor", "extension,"))]:  # the fp16-store methods
        p, m = methods[name](batches[0])
        assert torch.equal(p, ref[0]) and torch.equal(m, ref[1]), name
    for fn in methods.values():  # warm-up
        for i in batches[:10]:
            fn(i)
    times = {k: [] for k in methods}
    order = list(methods)
    shuffle = random.Random(3).shuffle
    for i in batches:
        shuffle(order)  # no method always runs right after the cache-trashing loops
        for name in order:
            t0 = clock()
            methods[name](i)
            times[name].append(clock() - t0)
    med = {k: statistics.median(v) * 1e6 for k, v in times.items()}
    tmax = statistics.mean(int(ops.gather_pad_fallback(values, offsets, i)[1].shape[1]) for i in batches[:20])
    return med, tmax


def bytes_per_token(d=384, n=256, mean_len=40):
    g = torch.Generator().manual_seed(2)
    seqs = [torch.randn(int(torch.randint(8, 2 * mean_len - 7, (1,), generator=g)), d, generator=g)
            for _ in range(n)]
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for dt in ["fp32", "fp16", "bf16", "int8"]:
            c = FeatureCache.from_tensors(seqs, dtype=dt, path=f"{tmp}/{dt}")
            out[dt] = {"bytes_per_token": c.bytes_per_token, "nbytes": c.nbytes,
                       "disk_bytes_per_token": round(c.nbytes / c.total_tokens, 1)}
    return out


def cuda_bench(reps=200, B=64, T=128, d=768, n=8192):
    dev = torch.device("cuda")
    res = {}
    # device-to-device copy ceiling (bytes read + written)
    buf = torch.empty(512 * 2**20, dtype=torch.uint8, device=dev)
    dst = torch.empty_like(buf)
    res["d2d_copy_GBps"] = _cuda_time_bw(lambda: dst.copy_(buf), 2 * buf.numel(), reps=min(50, reps))
    for name, dt, out_dt in [("bf16", torch.bfloat16, torch.bfloat16), ("int8", torch.int8, torch.bfloat16),
                             ("bf16->fp32", torch.bfloat16, torch.float32), ("int8->fp32", torch.int8, torch.float32)]:
        # n = 8192: an 8192 x 128 x 768 store, 1.6 GB bf16 -> batches come from HBM, not L2
        lens = torch.full((n,), T, dtype=torch.int64)
        offsets = torch.zeros(n + 1, dtype=torch.int64)
        offsets[1:] = lens.cumsum(0)
        total = int(offsets[-1])
        if dt == torch.int8:
            values = torch.randint(-127, 128, (total, d), dtype=torch.int8, device=dev)
            scales = (torch.rand(total, device=dev) * 0.05).half()
        else:
            values = torch.randn(total, d, device=dev).to(dt)
            scales = None
        offsets = offsets.to(dev)
        batches = [torch.randint(0, n, (B,), device=dev) for _ in range(32)]
        k = iter(range(10**9))
        in_bytes = B * T * d * values.element_size() + (B * T * 2 if scales is not None else 0)
        out_bytes = B * T * d * torch.tensor([], dtype=out_dt).element_size() + B * T
        def fn(v=values, o=offsets, s=scales, out_dt=out_dt, max_len=None):
            return ops.gather_pad(v, o, batches[next(k) % 32], s, out_dtype=out_dt, max_len=max_len)

        res[f"gather_pad {name}_GBps"] = _cuda_time_bw(fn, in_bytes + out_bytes, reps=reps)
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        kept = fn(max_len=T)
        torch.cuda.synchronize()  # peak extra memory of one call (its output included), MiB
        res[f"gather_pad {name} peak_MiB"] = round((torch.cuda.max_memory_allocated() - base) / 2**20, 2)
        del kept
        # every sequence is T long here, so max_len=T is what a caller with host lengths passes
        res[f"gather_pad {name} max_len_GBps"] = _cuda_time_bw(lambda fn=fn: fn(max_len=T), in_bytes + out_bytes,
                                                               reps=reps)
        if name in ("bf16", "int8"):  # a pinned host store read in place over PCIe/C2C (a slice: host RAM)
            m = min(n, 1024)
            pv = values[: m * T].cpu().pin_memory()
            ps = scales[: m * T].cpu().pin_memory() if scales is not None else None
            po = offsets[: m + 1].cpu().pin_memory()
            pb = [torch.randint(0, m, (B,), device=dev) for _ in range(32)]

            def pfn(max_len=None, pv=pv, po=po, ps=ps, out_dt=out_dt):
                return ops.gather_pad(pv, po, pb[next(k) % 32], ps, out_dtype=out_dt, max_len=max_len)

            res[f"gather_pad {name} pinned_GBps"] = _cuda_time_bw(pfn, in_bytes + out_bytes, reps=reps)
            res[f"gather_pad {name} pinned max_len_GBps"] = _cuda_time_bw(lambda pfn=pfn: pfn(max_len=T),
                                                                          in_bytes + out_bytes, reps=reps)
            del pfn, pv, ps, po
        del fn, values, scales
        torch.cuda.empty_cache()
    for key in [k for k in res if k.startswith("gather_pad") and k.endswith("_GBps")]:
        res[key.replace("_GBps", "_vs_copy")] = round(res[key] / res["d2d_copy_GBps"], 3)
    return res


def _cuda_time_bw(fn, nbytes, reps):
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b) * 1e-3)
    return round(nbytes / statistics.median(ts) / 1e9, 1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=400)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--clock", choices=["wall", "thread"], default="wall",
                    help="thread = CPU time of the calling thread (robust on a busy machine; "
                         "only meaningful with --threads 1)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--smoke", action="store_true", help="small stores and 5 reps: a plumbing check in seconds")
    ap.add_argument("--cuda-only", action="store_true", help="skip the CPU part (and the bytes-per-token table)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.reps = min(args.reps, 5)
        args.json = args.json or str(Path(tempfile.gettempdir()) / "stackft-bench" / "gather_pad-smoke.json")
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.thread_time
    info = _ext.load()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, extension: "
          f"{info.info if info else 'unavailable (' + repr(_ext.load_error()) + ')'}")
    out = {"threads": torch.get_num_threads(), "clock": args.clock}
    if not args.cuda_only:
        med, tmax = cpu_bench(args.reps, clock, **(dict(n=256) if args.smoke else {}))
        loop = med[LOOP]
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"\nCPU gather+pad, B=64, mean length 40 (mean Tmax {tmax:.1f}), d=384, fp16 -> fp32, "
              f"median of {args.reps} random batches, {args.clock} clock, load average {load:.1f} "
              f"on {os.cpu_count()} cores")
        print(f"{'method':46s} {'us':>9s} {'vs loop':>8s}")
        for k, v in med.items():
            print(f"{k:46s} {v:9.1f} {loop / v:7.2f}x")
        bpt = bytes_per_token()
        print("\nbytes per token at d=384 (values + per-token scale; disk incl. offsets, mean len 40)")
        for k, v in bpt.items():
            print(f"{k:6s} {v['bytes_per_token']:6d}  on disk {v['disk_bytes_per_token']:8.1f}")
        ratio = bpt["int8"]["nbytes"] / bpt["fp32"]["nbytes"]
        print(f"int8 / fp32 bytes: {ratio:.4f}")
        out.update(load_average=load, cpu_us=med, mean_tmax=tmax, bytes_per_token=bpt, int8_over_fp32=ratio)
    if torch.cuda.is_available():
        cu = cuda_bench(**(dict(reps=5, n=256) if args.smoke else dict(reps=min(args.reps, 200))))
        print(f"\nCUDA ({torch.cuda.get_device_name()}), B=64, T=128, d=768:")
        for k, v in cu.items():
            print(f"{k:40s} {v}")
        out["cuda"] = cu
    else:
        print("\nCUDA: no GPU here; the GPU part (bandwidth vs device-to-device copy) was not measured")
    if args.smoke:
        out["smoke"] = True
    if args.json:
        U.write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
