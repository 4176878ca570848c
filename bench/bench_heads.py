"""Every task head's training forward+backward beside the encoder's, at one shape (issue #12).

Rows, each a training forward + backward (``autograd.grad`` of the summed output w.r.t. every
parameter, train mode, dropout on), timed round-robin (every row once per round, median over the
rounds) so the rows of one thread count share the machine's load and their ratios are side by side:

* ``encoder``: all-MiniLM-L6-v2 (``load_encoder()``) on ``[B, T]`` token ids, and its no-grad
  forward (``encoder fwd (no grad)``, the live phase-1 cost);
* every head of ``stackft.modeling.heads.HEADS`` with its default options,
  ``build_head(name, d, 2)``, on features ``[B, T, d]`` (pair heads: two sides of ``T/2`` tokens,
  a joint ``T``-token pair split by segment). ``head_ms``: the features need no grad (phase 1, the
  issue's measurement); ``head_dx_ms``: they do (phase 2, the grad flows on into the encoder);
  ``cached_ms``: the cached phase-1 step, i.e. the batch's features read through the trainer's
  feature source (``stackft.cache.source.CachedFeatures``, the memory-mapped placement on CPU) from
  an on-disk ``FeatureCache`` (fp16, the trainer's default ``cache_dtype``; built in a temp folder
  from a stand-in encoder returning random ``[B, T, d]``), dequantised to fp32 and padded to the
  batch's width, then the same head's forward+backward. Pair heads read the siamese layout
  (sequence 2i = side a, 2i+1 = side b; the trainer's default ``pair_mode`` for pair heads), so the
  features have the exact shapes of ``head_ms``'s. ``cached_over_head`` = ``cached_ms / ms``
  (target ≤ 1.15, ``cached_pass``): what is left above 1 is the cache's overhead; ``read_us``: the
  feature source's call alone (the cache read), and ``read_over_head`` = 1 + read / head, the same
  overhead measured directly (for sub-millisecond heads the difference of two step times is noise);
* ``highway-lstm [torch]``: the same head on the reference's per-step loop (today's CPU path
  before the C++ layer), against ``highway-lstm`` (``backend="auto"``: the C++ layer on CPU);
* ``nn.LSTM 2x bi 256``: ``nn.LSTM(d, 256, num_layers=2, bidirectional=True)``, the highway
  head's recurrent shape as a plain LSTM (oneDNN on CPU);
* ``highway layer bi [cpp]`` vs ``nn.LSTM 1x bi 256``: one layer, both directions, in ``d``,
  H 256, with ``x`` not needing / needing its grad (``-dx`` rows);
* variants, for their cost (accuracy: docs/methods.md, section 6): ``densenet channels=C``, the
  DenseNet head at other widths than its default (128 channels); ``sim-transformer match_norm=none``,
  Sim-Transformer without the matching-feature norm (what the norm costs); ``sim-transformer
  d_model=256 dim_feedforward=1024``, its width before head revision 3, with and without the norm
  (the latter: the head as revision 2 built it).
  Variants have the ``head_dx`` column and the phase-2 estimate too, not the cached step.

Per row: median and lowest ms, µs per token (B·T), ratio to the encoder's fwd+bwd, parameters,
GFLOP of one forward and of the forward+backward (``torch.utils.flop_counter.FlopCounterMode``;
``nn.LSTM`` is added analytically, 2·tokens·4H·(in+H) per direction and layer forward and twice
that backward, because oneDNN's RNN op is invisible to the counter; the C++ highway layer is
counted on its reference, which runs the same GEMMs), and ``phase2_step_est``:
``(encoder + head_dx) / (encoder + fc_dx)``, the phase-2 step over the finetune-only step as a
sum of measured parts (no optimizer step; it is not a trainer measurement).

    python bench/bench_heads.py                      # B=32, T=64, d=384; 1 and 2 threads; CPU (+CUDA if present)
    python bench/bench_heads.py --threads 1 --rounds 7
    python bench/bench_heads.py --smoke --out /tmp/heads.json    # seconds: tiny random encoder and shapes
    python bench/bench_heads.py --no-cached                      # without the cached phase-1 rows

Writes ``bench/results/heads-<device>.json`` (smoke: ``--out`` or the temp folder, never results/).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _util as U  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import stackft.kernels as K  # noqa: E402
from stackft import _ext  # noqa: E402
from stackft.modeling.heads import HEADS, build_head, head_level, head_pair_input  # noqa: E402

VARIANTS = (("densenet", {"channels": 64}), ("densenet", {"channels": 192}), ("densenet", {"channels": 384}),
            ("sim-transformer", {"match_norm": "none"}),
            ("sim-transformer", {"d_model": 256, "dim_feedforward": 1024}),
            ("sim-transformer", {"match_norm": "none", "d_model": 256, "dim_feedforward": 1024}))
FULL = dict(B=32, T=64, d=384, lstm=256, encoder="minilm", rounds=5, warmup=1, variants=VARIANTS, cache_batches=8)
SMOKE = dict(B=2, T=8, d=32, lstm=16, encoder="random:tiny", rounds=1, warmup=1,
             variants=(("sim-transformer", {"match_norm": "none"}),), cache_batches=2)
CACHE_DTYPE = "fp16"  # TrainConfig.cache_dtype's default
ISA_ENV = ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")  # recorded: they change the libraries' code paths
BURST_MS = 50.0  # entries faster than this are timed in bursts of back-to-back calls (time_round_robin)
CACHED_TARGET = 1.15  # issue #12: cached phase-1 step <= 1.15x the head's own fwd+bwd on materialised features


# --------------------------------------------------------------------------- rows


class Row:
    """One timed entry: ``fn()`` runs a training forward+backward; ``flop_fn()`` is what is counted."""

    def __init__(self, name: str, fn, *, kind: str, params: int, flop_fn=None, lstm_modules=(), note: str = ""):
        self.name, self.fn, self.kind, self.params, self.note = name, fn, kind, params, note
        self.flop_fn = flop_fn or fn
        self.lstm_modules = list(lstm_modules)
        self.times: list[float] = []


def _grad_step(module: nn.Module, forward, leaves=(), *, accumulate: bool = False):
    """A closure: ``forward()`` -> output(s); grads of their sum w.r.t. leaves + module params.

    ``accumulate=True`` uses ``.backward()`` and clears ``.grad`` after (FlopCounterMode cannot count
    an ``autograd.grad`` w.r.t. leaf inputs); the timed closures use ``autograd.grad`` (no ``.grad``
    build-up between runs).
    """
    params = [p for p in module.parameters() if p.requires_grad]

    def run():
        out = forward()
        outs = out if isinstance(out, (tuple, list)) else (out,)
        loss = sum(o.float().sum() for o in outs if isinstance(o, torch.Tensor) and o.requires_grad)
        if accumulate:
            loss.backward()
            for t in list(leaves) + params:
                t.grad = None
        else:
            torch.autograd.grad(loss, list(leaves) + params, allow_unused=True)

    return run


def _features(name: str, B: int, T: int, d: int, dev, requires_grad: bool) -> dict:
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g).to(dev).requires_grad_(requires_grad)  # noqa: E731
    if head_pair_input(name):
        Ta = max(1, T // 2)
        m = torch.ones(B, Ta, dtype=torch.bool, device=dev)
        return {"hidden_a": r(B, Ta, d), "mask_a": m, "hidden_b": r(B, T - Ta, d), "mask_b": m.clone()}
    return {"hidden": r(B, T, d), "mask": torch.ones(B, T, dtype=torch.bool, device=dev)}


def _leaves(feats: dict) -> list:
    return [v for v in feats.values() if isinstance(v, torch.Tensor) and v.requires_grad]


@contextlib.contextmanager
def _highway_backend(backend: str):
    """Make the highway head call ``stackft.kernels.highway_lstm(..., backend=backend)``."""
    import stackft.modeling.heads.highway_lstm as module

    real = module.highway_lstm
    module.highway_lstm = lambda *a, **k: K.highway_lstm(*a, **k, backend=backend)
    try:
        yield
    finally:
        module.highway_lstm = real


def _with_backend(fn, backend: str):
    def run():
        with _highway_backend(backend):
            return fn()
    return run


def _nparams(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


class _RandomEncoder(nn.Module):
    """Stands in for the frozen encoder of a cache build: ``hidden [B, T, d]`` ~ N(0, 1), seeded."""

    def __init__(self, d: int):
        super().__init__()
        self.d, self.g = d, torch.Generator().manual_seed(0)

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        return torch.randn(*input_ids.shape, self.d, generator=self.g)


def cached_source(cfg: dict, dev, root, *, pair: bool, first_token: bool = False):
    """``(source, batches)``: the trainer's phase-1 feature source over an on-disk cache, and its batches.

    ``cfg["cache_batches"] * B`` examples of ``T`` tokens (pairs: siamese, 2i = side a of ``T/2`` tokens,
    2i+1 = side b of the rest), every token's features from :class:`_RandomEncoder` stored by
    ``FeatureCache.build`` in ``CACHE_DTYPE`` under ``root``; ``source`` is ``CachedFeatures`` placed as
    ``CachedFeatures.for_data`` places it (``cache_placement="auto"``: memory-mapped on CPU; ``first_token``:
    it serves only position 0, as the trainer does for a head that reads only [CLS]). ``batches``:
    one shuffled epoch of the loader's host-side batches (``index`` and the attention masks, all ``T`` wide,
    so ``_to_width`` pads nothing); ``source(batch, "train")`` is what a cached train step calls.
    """
    from stackft.cache import FeatureCache
    from stackft.cache.source import CachedFeatures, choose_placement, place

    B, T, d = cfg["B"], cfg["T"], cfg["d"]
    n, Ta = cfg["cache_batches"] * B, max(1, T // 2)
    g = torch.Generator().manual_seed(1)
    lengths = [Ta, T - Ta] * n if pair else [T] * n  # cache order: sequence i, or 2i / 2i+1 for pair i
    seqs = [torch.randint(1000, 29000, (L,), generator=g).tolist() for L in lengths]
    cache = FeatureCache.build(_RandomEncoder(d), seqs, dtype=CACHE_DTYPE, batch_size=64, progress=False,
                               path=Path(root) / (("pairs" if pair else "single") + ("-cls" if first_token else "")))
    placement = choose_placement("auto", cache.nbytes, dev)
    source = CachedFeatures(place({"train": cache, "dev": cache}, placement, dev), pair_input=pair, device=dev,
                            placement=placement, first_token=first_token)
    ones = lambda w: torch.ones(B, w, dtype=torch.long)  # noqa: E731
    order = torch.randperm(n, generator=g)
    batches = [{"index": order[k:k + B], **({"a_attention_mask": ones(Ta), "b_attention_mask": ones(T - Ta)}
                                            if pair else {"attention_mask": ones(T)})} for k in range(0, n, B)]
    return source, batches


def build_rows(cfg: dict, dev, *, reference_highway: bool = True, heads=None, cache_root=None) -> list[Row]:
    """The rows; ``cache_root``: a folder for the caches of the cached phase-1 rows (None: no such rows)."""
    B, T, d, Hl = cfg["B"], cfg["T"], cfg["d"], cfg["lstm"]
    rows: list[Row] = []

    # the encoder
    from stackft.modeling.encoders import load_encoder, tiny_random_encoder

    enc = (tiny_random_encoder(d, 2) if cfg["encoder"] == "random:tiny" else load_encoder(cfg["encoder"])).to(dev)
    enc.train()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, min(enc.tokenizer.vocab_size, 29000), (B, T), generator=g).to(dev)
    am = torch.ones(B, T, dtype=torch.long, device=dev)
    rows.append(Row("encoder", _grad_step(enc, lambda: enc(ids, am)), kind="encoder", params=_nparams(enc),
                    note=f"{enc.name_or_path}, {enc.num_layers} x {enc.hidden_size}"))

    def enc_fwd():
        with torch.no_grad():
            enc(ids, am)
    rows.append(Row("encoder fwd (no grad)", enc_fwd, kind="encoder", params=_nparams(enc)))

    # every head, default options
    sources = {}  # (pair input, first token only) -> (CachedFeatures, batches): one per layout, shared by heads
    for name in heads or list(HEADS):
        level = head_level(name)
        torch.manual_seed(0)
        head = build_head(name, d, 2, level=level).to(dev).train()
        lstms = [m for m in head.modules() if isinstance(m, nn.LSTM)]
        frozen = _features(name, B, T, d, dev, False)
        live = _features(name, B, T, d, dev, True)
        step = _grad_step(head, lambda h=head, f=frozen: h(f))
        step_dx = _grad_step(head, lambda h=head, f=live: h(f), _leaves(live))
        note = f"{level}-level" + (", pair: 2 x T/2 tokens" if head_pair_input(name) else "")
        row = Row(name, step, kind="head", params=_nparams(head), lstm_modules=lstms, note=note)
        row.dx_fn = step_dx
        if cache_root is not None:
            layout = (head_pair_input(name), bool(getattr(head, "first_token_only", False)))
            if layout not in sources:
                sources[layout] = cached_source(cfg, dev, cache_root, pair=layout[0], first_token=layout[1])
            source, batches = sources[layout]
            # the trainer's cached forward: model.forward_features(features(batch, "train")) = head(features) for
            # single-sequence and siamese feature dicts
            it = itertools.cycle(batches)
            row.cached_fn = _grad_step(head, lambda h=head, s=source, it=it: h(s(next(it), "train")))
            # the cache read alone: for sub-millisecond heads the difference of two noisy step times
            # says less about the cache's overhead than timing the read itself
            row.read_fn = lambda s=source, it=itertools.cycle(batches): s(next(it), "train")
        if name == "highway-lstm":
            row.flop_fn = _with_backend(step, "torch")  # FlopCounterMode cannot see inside the C++ op
            row.note += f", backend auto ({K._backend.resolve('auto', 'highway_lstm', frozen['hidden'])})"
        rows.append(row)
        if name == "highway-lstm" and reference_highway:
            ref = Row("highway-lstm [torch]", _with_backend(step, "torch"), kind="head", params=_nparams(head),
                      note="reference per-step loop")
            rows.append(ref)

    # heads with other options than their defaults: cost only; accuracy in docs/methods.md
    for name, opts in cfg.get("variants", ()):
        if heads is not None and name not in heads:
            continue
        torch.manual_seed(0)
        head = build_head(name, d, 2, level=head_level(name), **opts).to(dev).train()
        frozen = _features(name, B, T, d, dev, False)
        live = _features(name, B, T, d, dev, True)
        row = Row(" ".join([name, *(f"{k}={v}" for k, v in opts.items())]),
                  _grad_step(head, lambda h=head, f=frozen: h(f)), kind="variant", params=_nparams(head),
                  lstm_modules=[m for m in head.modules() if isinstance(m, nn.LSTM)], note="cost only")
        row.dx_fn = _grad_step(head, lambda h=head, f=live: h(f), _leaves(live))
        rows.append(row)

    # plain LSTMs of the highway head's shape, and one highway layer
    torch.manual_seed(0)
    lstm2 = nn.LSTM(d, Hl, num_layers=2, bidirectional=True, batch_first=True).to(dev).train()
    x = torch.randn(B, T, d, device=dev)
    xg = x.clone().requires_grad_(True)
    rows.append(Row(f"nn.LSTM 2x bi {Hl}", _grad_step(lstm2, lambda: lstm2(x)[0]), kind="baseline",
                    params=_nparams(lstm2), lstm_modules=[lstm2]))
    from stackft.modeling.heads.highway_lstm import UnidirectionalHighwayLSTM

    layer = nn.ModuleList([UnidirectionalHighwayLSTM(d, Hl), UnidirectionalHighwayLSTM(d, Hl, reverse=True)]).to(dev)
    lengths = torch.full((B,), T, dtype=torch.long)
    lstm1 = nn.LSTM(d, Hl, bidirectional=True, batch_first=True).to(dev).train()
    for suffix, inp, leaves in (("", x, ()), (" -dx", xg, (xg,))):
        fwd = (lambda i=inp: [layer[0](i, lengths), layer[1](i, lengths)])
        rows.append(Row(f"highway layer bi{suffix}", _grad_step(layer, fwd, leaves), kind="layer",
                        params=_nparams(layer),
                        flop_fn=_with_backend(_grad_step(layer, fwd, leaves, accumulate=True), "torch"),
                        note=f"in {d}, H {Hl}, backend auto"))
        lstm_fwd = (lambda i=inp: lstm1(i)[0])
        rows.append(Row(f"nn.LSTM 1x bi {Hl}{suffix}", _grad_step(lstm1, lstm_fwd, leaves), kind="layer",
                        params=_nparams(lstm1), lstm_modules=[lstm1],
                        flop_fn=_grad_step(lstm1, lstm_fwd, leaves, accumulate=True)))
    return rows


# --------------------------------------------------------------------------- FLOPs


def _lstm_flops(lstm: nn.LSTM, tokens: int) -> int:
    """Forward FLOPs of ``lstm`` over ``tokens`` time steps x rows: 2·4H·(in + H) per token, layer, direction."""
    dirs = 2 if lstm.bidirectional else 1
    H, total = lstm.hidden_size, 0
    for layer in range(lstm.num_layers):
        n_in = lstm.input_size if layer == 0 else H * dirs
        total += dirs * 2 * tokens * 4 * H * (n_in + H)
    return total


def count_flops(row: Row, fn) -> int:
    """FLOPs of one ``fn()``, plus the analytic forward+backward of ``row.lstm_modules`` (see module doc)."""
    from torch.nn.utils.rnn import PackedSequence
    from torch.utils.flop_counter import FlopCounterMode

    extra = [0]

    def hook(mod, inputs, _out):
        x = inputs[0]
        tokens = x.data.shape[0] if isinstance(x, PackedSequence) else x.shape[0] * x.shape[1]
        extra[0] += _lstm_flops(mod, tokens)

    handles = [m.register_forward_hook(hook) for m in row.lstm_modules]
    try:
        with FlopCounterMode(display=False) as fc:
            fn()
    finally:
        for h in handles:
            h.remove()
    return fc.get_total_flops(), extra[0]


def gflop_fwd_bwd(row: Row) -> float:
    total, lstm_fwd = count_flops(row, row.flop_fn)
    return (total + 3 * lstm_fwd) / 1e9


# --------------------------------------------------------------------------- timing


def run_device(cfg: dict, dev, threads: list[int], *, reference_highway: bool, heads=None, cache_root=None) -> dict:
    rows = build_rows(cfg, dev, reference_highway=reference_highway, heads=heads, cache_root=cache_root)
    tokens = cfg["B"] * cfg["T"]
    fl = {}
    for row in rows:
        try:
            fl[row.name] = gflop_fwd_bwd(row)
        except Exception as e:  # a counter failure must not lose the timings
            fl[row.name] = None
            print(f"flop count failed for {row.name}: {type(e).__name__}: {e}", file=sys.stderr)
    res = {}
    for n in threads if dev.type == "cpu" else [torch.get_num_threads()]:
        torch.set_num_threads(n)
        load0 = os.getloadavg()
        entries = [(r.name, r.fn) for r in rows] + [(r.name + " [dx]", r.dx_fn) for r in rows if hasattr(r, "dx_fn")]
        entries += [(r.name + " [cached]", r.cached_fn) for r in rows if hasattr(r, "cached_fn")]
        entries += [(r.name + " [read]", r.read_fn) for r in rows if hasattr(r, "read_fn")]
        times, cpu_times = U.time_round_robin(entries, cfg["rounds"], cfg["warmup"], dev, burst_ms=BURST_MS)
        load1 = os.getloadavg()
        med = {k: statistics.median(v) for k, v in times.items()}
        cpu_med = {k: statistics.median(v) for k, v in cpu_times.items()}
        enc = med["encoder"]
        fc_dx = med.get("fc [dx]")
        table = []
        for row in rows:
            t = times[row.name]
            e = {"name": row.name, "kind": row.kind, "ms": med[row.name], "low_ms": min(t), "cpu_ms": cpu_med[row.name],
                 "us_per_token": med[row.name] * 1e3 / tokens, "vs_encoder": med[row.name] / enc,
                 "params": row.params, "gflop_fwd_bwd": fl[row.name],
                 "gflop_per_token": None if fl[row.name] is None else fl[row.name] / tokens, "note": row.note}
            if hasattr(row, "dx_fn"):
                dx = med[row.name + " [dx]"]
                e.update(dx_ms=dx, dx_low_ms=min(times[row.name + " [dx]"]), dx_cpu_ms=cpu_med[row.name + " [dx]"])
                if fc_dx is not None:
                    e["phase2_step_est"] = (enc + dx) / (enc + fc_dx)
            if hasattr(row, "cached_fn"):
                c, key = med[row.name + " [cached]"], row.name + " [cached]"
                e.update(cached_ms=c, cached_low_ms=min(times[key]), cached_cpu_ms=cpu_med[key],
                         cached_over_head=c / med[row.name], cached_over_head_cpu=cpu_med[key] / cpu_med[row.name],
                         cached_pass=c / med[row.name] <= CACHED_TARGET)
            if hasattr(row, "read_fn"):
                r_ms = med[row.name + " [read]"]
                e.update(read_us=r_ms * 1e3, read_over_head=1 + r_ms / med[row.name])
            table.append(e)
        L = cfg["lstm"]
        pairs = {"highway head: torch / auto (speed-up)": ("highway-lstm [torch]", "highway-lstm"),
                 "highway head / nn.LSTM 2x bi": ("highway-lstm", f"nn.LSTM 2x bi {L}"),
                 "highway layer bi / nn.LSTM 1x bi": ("highway layer bi", f"nn.LSTM 1x bi {L}"),
                 "highway layer bi / nn.LSTM 1x bi (x needs grad)": ("highway layer bi -dx", f"nn.LSTM 1x bi {L} -dx")}
        ratios = {k: {"wall": med[a] / med[b], "cpu": cpu_med[a] / cpu_med[b]}
                  for k, (a, b) in pairs.items() if a in med and b in med}
        res[f"threads={n}" if dev.type == "cpu" else dev.type] = {
            "threads": n, "load_average_before": load0, "load_average_after": load1, "rows": table,
            "ratios": ratios, "raw_ms": times, "raw_cpu_ms": cpu_times}
    return res


def _md(block: dict) -> str:
    cols = ["name", "ms", "cpu_ms", "dx_ms", "cached_ms", "cached_over_head", "cached_pass", "read_us",
            "read_over_head", "us_per_token",
            "vs_encoder", "phase2_step_est", "gflop_fwd_bwd", "params"]
    verdict = {True: f"pass (≤ {CACHED_TARGET})", False: f"fail (> {CACHED_TARGET})"}
    return U.table([{**r, "cached_pass": verdict.get(r.get("cached_pass"))} for r in block["rows"]], cols)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny random encoder and shapes (seconds; numbers meaningless)")
    ap.add_argument("--threads", default="1,2", help="CPU intra-op thread counts, comma list (default 1,2)")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds (default 5; smoke 1)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                    help="auto: CPU, and CUDA too when a GPU is present")
    ap.add_argument("--no-reference-highway", action="store_true",
                    help="skip the slow highway-lstm [torch] row")
    ap.add_argument("--no-cached", action="store_true",
                    help="skip the cached phase-1 step rows (no feature caches are built)")
    ap.add_argument("--heads", default=None,
                    help=f"comma list of heads (default all: {','.join(HEADS)}); fc is always added "
                         "(the phase-2 estimate divides by it)")
    ap.add_argument("--merge", action="store_true",
                    help="keep the thread blocks already in the output JSON that this run does not measure "
                         "(e.g. --threads 1 --rounds 5, then --threads 2 --rounds 3 --merge)")
    ap.add_argument("--isa", default="auto", choices=("auto", "avx512", "avx2", "base"),
                    help="the C++ highway layer's CPU code path (gate math and its per-step GEMM micro-kernel); "
                         "with ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 and --isa avx2 the rows time an "
                         "AVX2-only CPU's paths on an AVX-512 one")
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/heads-<device>.json; "
                                                "smoke: the temp folder)")
    args = ap.parse_args(argv)
    cfg = dict(SMOKE if args.smoke else FULL)
    if args.rounds:
        cfg["rounds"] = args.rounds
    threads = [int(t) for t in args.threads.split(",")]
    heads = None
    if args.heads:
        heads = [h.strip() for h in args.heads.split(",") if h.strip()]
        unknown = [h for h in heads if h not in HEADS]
        if unknown:
            ap.error(f"--heads: unknown {unknown}; known: {', '.join(HEADS)}")
        heads = ["fc"] + [h for h in heads if h != "fc"]
    devs = [torch.device("cpu")] if args.device in ("auto", "cpu") else []
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        devs.append(torch.device("cuda"))
    ext = _ext.load()
    if args.isa != "auto":
        if ext is None:
            ap.error("--isa: the stackft_C extension is unavailable")
        try:
            K._highway_lstm_cpp.isa(args.isa)
        except ValueError as e:
            ap.error(f"--isa: {e}")
    for dev in devs:
        res = {"device": U.device_name() if dev.type == "cuda" else f"cpu: {platform.processor() or platform.machine()}",
               "host_cpus": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
               "shape": {k: cfg[k] for k in ("B", "T", "d", "lstm")}, "encoder": cfg["encoder"],
               "rounds": cfg["rounds"], "burst_ms": BURST_MS, "smoke": args.smoke,
               "cached": None if args.no_cached else {
                   "dtype": CACHE_DTYPE, "examples": cfg["cache_batches"] * cfg["B"], "target_max": CACHED_TARGET,
                   "layout": "single sequences of T tokens; pair heads: siamese (2i = side a, 2i+1 = side b)",
                   "step": "CachedFeatures(batch, 'train') over an on-disk FeatureCache (placement auto, no "
                           "prefetch), then the head's fwd+bwd"},
               "extension": None if ext is None else {"info": ext.info, "highway_isa": K._highway_lstm_cpp.isa(),
                                                     "highway_gemm": K._highway_lstm_cpp.gemm(),
                                                     "highway_step_gemm": K._highway_lstm_cpp.step_gemm(),
                                                     "env": {k: os.environ[k] for k in ISA_ENV if k in os.environ}},
               "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
               "results": None}
        with tempfile.TemporaryDirectory(prefix="bench-heads-cache-") as tmp:
            res["results"] = run_device(cfg, dev, threads, reference_highway=not args.no_reference_highway,
                                        heads=heads, cache_root=None if args.no_cached else tmp)
        if args.out:
            path = Path(args.out)
            if len(devs) > 1:
                path = path.with_name(f"{path.stem}-{dev.type}{path.suffix}")
        elif args.smoke:
            path = Path(tempfile.gettempdir()) / f"heads-{dev.type}-smoke.json"
        else:
            path = U.RESULTS / f"heads-{dev.type}.json"
        if args.merge and path.exists():
            old = json.loads(path.read_text())
            res["results"] = {**old.get("results", {}), **res["results"]}
            res["command"] = "; ".join(dict.fromkeys([old.get("command", ""), res["command"]]))
        U.write_json(path, res)
        for key, block in res["results"].items():
            if key not in {f"threads={n}" for n in threads} | {"cuda"}:
                continue
            print(f"\n## {dev.type} {key}, load {block['load_average_before'][0]:.2f} -> "
                  f"{block['load_average_after'][0]:.2f}\n")
            print(_md(block))
            for k, v in block["ratios"].items():
                print(f"- {k}: {v['wall']:.2f} (wall), {v['cpu']:.2f} (CPU time)")
        print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
