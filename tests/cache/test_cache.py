"""FeatureCache: round trips, on-disk validation, atomic builds, int8 error bound, CLI."""

import json
import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from stackft.cache.format import CacheError, FeatureCache, StaleCacheError, cache_fingerprint, get_or_build
from stackft.cache.quantize import quantize_int8
from stackft.cli import cache as cli_cache

DTYPES = ["fp32", "fp16", "bf16", "int8"]


def random_seqs(gen, n=12, d=37, max_len=9):
    lens = torch.randint(0, max_len + 1, (n,), generator=gen).tolist()
    lens[0] = max(lens[0], 1)
    return [torch.randn(L, d, generator=gen) * 4 for L in lens]


class TinyEncoder(nn.Module):
    """Stand-in for the Encoder contract: ``(input_ids, attention_mask) -> hidden [B, T, H]``.

    Each token's output depends on its id, its position and the mean over the sequence's real
    tokens, so padding mistakes, misplaced rows and train-mode dropout all change the result.
    """

    def __init__(self, vocab=50, hidden=24, dropout=0.5, fail_on_call=None):
        super().__init__()
        self.emb = nn.Embedding(vocab, hidden)
        self.drop = nn.Dropout(dropout)
        self.hidden_size = hidden
        self.calls = []
        self.fail_on_call = fail_on_call

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        self.calls.append({"shape": tuple(input_ids.shape), "grad": torch.is_grad_enabled(),
                           "training": self.training})
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise RuntimeError("simulated crash mid-build")
        m = attention_mask.unsqueeze(-1).float()
        e = self.emb(input_ids)
        ctx = (e * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp(min=1)
        pos = torch.arange(input_ids.shape[1], dtype=torch.float32)[None, :, None] * 0.01
        return self.drop(e + 0.5 * ctx + pos)

    def fingerprint(self):
        return "tiny-encoder-v1"


class Sequences:
    def __init__(self, seqs):
        self._seqs = seqs

    def sequences(self):
        return self._seqs


def random_ids(gen, n=23, vocab=50, max_len=11):
    return [torch.randint(1, vocab, (int(torch.randint(1, max_len + 1, (1,), generator=gen)),),
                          generator=gen).tolist() for _ in range(n)]


# ---- round trips --------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip(tmp_path, gen, dtype):
    seqs = random_seqs(gen)
    cache = FeatureCache.from_tensors(seqs, dtype=dtype, path=tmp_path / "c", fingerprint="fp1")
    assert len(cache) == len(seqs) and cache.dim == 37 and cache.dtype == dtype
    assert cache.fingerprint == "fp1" and cache.path == tmp_path / "c"
    assert cache.lengths.tolist() == [len(s) for s in seqs]
    idx = torch.tensor([3, 0, 3, 7, 1, 11])
    padded, mask = cache.gather(idx)
    assert padded.shape == (6, max(len(seqs[i]) for i in idx), 37)
    for b, i in enumerate(idx.tolist()):
        x, L = seqs[i], len(seqs[i])
        got = padded[b, :L]
        assert mask[b, :L].all() and not mask[b, L:].any() and not padded[b, L:].any()
        assert torch.equal(got, cache[i])
        if dtype == "fp32":
            assert torch.equal(got, x)
        elif dtype in ("fp16", "bf16"):  # exactly one rounding to the storage dtype
            assert torch.equal(got, x.to(getattr(torch, {"fp16": "float16", "bf16": "bfloat16"}[dtype])).float())
        else:
            a, b_ = int(cache.offsets[i]), int(cache.offsets[i + 1])
            bound = cache.scales[a:b_].float()[:, None] / 2
            assert ((got - x).abs() <= bound).all()
    # the in-memory variant gives the same batch
    mem = FeatureCache.from_tensors(seqs, dtype=dtype)
    assert torch.equal(mem.gather(idx)[0], padded)


def test_int8_error_bound_over_magnitudes(gen):
    # rows from 1e-12 to 1e5 in magnitude: subnormal and zero scales are where a
    # round-to-nearest float16 scale breaks the scale/2 bound
    mags = torch.logspace(-12, 5, 60)
    x = torch.randn(60, 384, generator=gen) * mags[:, None]
    x[5] = 0.0
    x[7, 3] = -mags[7] * 10  # one outlier per row sets the scale
    q, s = quantize_int8(x)
    assert q.dtype == torch.int8 and s.dtype == torch.float16 and (q.abs() <= 127).all()
    s32 = s.float()
    xhat = q.float() * s32[:, None]
    err = (x - xhat).abs()
    assert (err <= s32[:, None] / 2).all()
    # against the exact scale a/127 (module docstring): a/254 (1 + 2^-10) + 2^-25
    a = x.abs().amax(1)
    assert (s32 >= a / 127).all()
    assert (err.amax(1) <= a / 254 * (1 + 2**-10) + 2**-25).all()
    assert torch.equal(xhat[5], torch.zeros(384))


def test_int8_rejects_overflowing_features():
    with pytest.raises(ValueError, match="too large for an int8 cache"):
        quantize_int8(torch.full((1, 4), 1e7))


def test_int8_bytes_ratio(tmp_path, gen):
    seqs = [torch.randn(40, 384, generator=gen) for _ in range(8)]
    f32 = FeatureCache.from_tensors(seqs, dtype="fp32", path=tmp_path / "f32")
    i8 = FeatureCache.from_tensors(seqs, dtype="int8", path=tmp_path / "i8")
    assert i8.nbytes <= 0.26 * f32.nbytes
    on_disk = lambda p: sum(f.stat().st_size for f in p.iterdir() if f.suffix == ".bin")  # noqa: E731
    assert on_disk(tmp_path / "i8") <= 0.26 * on_disk(tmp_path / "f32")
    assert i8.bytes_per_token == 386 and f32.bytes_per_token == 1536


# ---- on-disk validation -------------------------------------------------------------------------


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc")
def test_open_is_memory_mapped(tmp_path, gen):
    path = tmp_path / "c"
    FeatureCache.from_tensors(random_seqs(gen), dtype="int8", path=path)
    cache = FeatureCache.open(path)
    maps = Path("/proc/self/maps").read_text()
    assert str(path / "values.bin") in maps and str(path / "scales.bin") in maps
    first = int(cache.values[0, 0])
    cache.values[0, 0] = first ^ 1  # copy-on-write: writes through the cache never reach the file
    again = FeatureCache.open(path, verify=True)
    assert int(again.values[0, 0]) == first


@pytest.mark.parametrize("name", ["values.bin", "offsets.bin", "scales.bin"])
def test_truncated_file_is_refused(tmp_path, gen, name):
    path = tmp_path / "c"
    FeatureCache.from_tensors(random_seqs(gen), dtype="int8", path=path)
    f = path / name
    f.write_bytes(f.read_bytes()[:-3])
    with pytest.raises(CacheError, match=f"{name} has"):
        FeatureCache.open(path)


def test_missing_header_or_bad_magic_is_refused(tmp_path, gen):
    path = tmp_path / "c"
    FeatureCache.from_tensors(random_seqs(gen), dtype="fp16", path=path)
    hdr = json.loads((path / "header.json").read_text())
    (path / "header.json").write_text(json.dumps(dict(hdr, magic="nope")))
    with pytest.raises(CacheError, match="bad magic"):
        FeatureCache.open(path)
    (path / "header.json").unlink()
    with pytest.raises(CacheError, match="no header.json"):
        FeatureCache.open(path)
    with pytest.raises(CacheError, match="no feature cache"):
        FeatureCache.open(tmp_path / "missing")


def test_corrupted_offsets_are_refused(tmp_path):
    path = tmp_path / "c"
    FeatureCache.from_tensors([torch.ones(2, 3), torch.ones(3, 3), torch.ones(1, 3)], dtype="fp32", path=path)
    raw = bytearray((path / "offsets.bin").read_bytes())
    raw[8:16] = (5).to_bytes(8, "little")  # offsets 0,2,5,6 -> 0,5,1,6: sizes fine, decreasing
    raw[16:24] = (1).to_bytes(8, "little")
    (path / "offsets.bin").write_bytes(bytes(raw))
    with pytest.raises(CacheError, match="offsets"):
        FeatureCache.open(path)


@pytest.mark.parametrize("name", ["values.bin", "scales.bin", "offsets.bin"])
def test_flipped_byte_fails_verify(tmp_path, gen, name, capsys):
    path = tmp_path / "c"
    seqs = [torch.randn(int(torch.randint(2, 9, (1,), generator=gen)), 16, generator=gen) for _ in range(6)]
    FeatureCache.from_tensors(seqs, dtype="int8", path=path)
    assert cli_cache.main(["cache", "verify", str(path)]) == 0
    raw = bytearray((path / name).read_bytes())
    # offsets: low byte of offsets[1] (+-1 keeps it monotone as every length is >= 2)
    raw[8 if name == "offsets.bin" else len(raw) // 2] ^= 0x01
    (path / name).write_bytes(bytes(raw))
    cache = FeatureCache.open(path)  # sizes still match: open succeeds ...
    with pytest.raises(CacheError, match=f"checksum mismatch in {name}"):
        cache.verify()  # ... and the checksum catches it
    with pytest.raises(CacheError, match="checksum mismatch"):
        FeatureCache.open(path, verify=True)
    assert cli_cache.main(["cache", "verify", str(path)]) == 1
    assert "FAILED" in capsys.readouterr().err


def test_fingerprint_mismatch_is_stale(tmp_path, gen):
    path = tmp_path / "c"
    FeatureCache.from_tensors(random_seqs(gen), dtype="fp16", path=path, fingerprint="aaa")
    assert FeatureCache.open(path, expect_fingerprint="aaa").fingerprint == "aaa"
    with pytest.raises(StaleCacheError) as ei:
        FeatureCache.open(path, expect_fingerprint="bbb")
    assert isinstance(ei.value, CacheError)


def test_cache_fingerprint_covers_its_inputs(tmp_path):
    f1, f2 = tmp_path / "a.txt", tmp_path / "b.txt"
    f1.write_text("hello\tB-PER\n")
    f2.write_text("hello\tB-PER\n")
    base = dict(encoder_fingerprint="enc", data_files=[f1], max_length=128, layers=None, dtype="fp16")
    fp = cache_fingerprint(**base)
    assert fp == cache_fingerprint(**dict(base, data_files=[f2]))  # content, not path
    variants = [dict(encoder_fingerprint="enc2"), dict(max_length=64), dict(layers=[-1]),
                dict(layers=[-2, -1]), dict(dtype="int8"), dict(extra="x"), dict(data_files=[f1, f2])]
    seen = {fp}
    for v in variants:
        seen.add(cache_fingerprint(**dict(base, **v)))
    assert len(seen) == len(variants) + 1
    f1.write_text("hello\tO\n")
    assert cache_fingerprint(**base) != fp


# ---- building -----------------------------------------------------------------------------------


def test_build_matches_running_the_encoder(tmp_path, gen):
    enc = TinyEncoder()
    enc.train()
    ids = random_ids(gen)
    ids[4] = []  # an empty sequence is stored with 0 rows and never fed to the encoder
    cache = FeatureCache.build(enc, Sequences(ids), dtype="fp32", path=tmp_path / "c", batch_size=5,
                               layers=[-1], progress=False)
    assert enc.training  # mode restored
    assert all(not c["grad"] and not c["training"] for c in enc.calls)
    lens_fed = [c["shape"][1] for c in enc.calls]
    assert lens_fed == sorted(lens_fed, reverse=True)  # length-sorted batches
    assert cache.lengths.tolist() == [len(s) for s in ids]  # every token, original order
    assert cache.header["layers"] == [-1] and cache.header["encoder"] == "TinyEncoder"
    enc.eval()
    with torch.no_grad():
        for i, s in enumerate(ids):
            if not s:
                continue
            t = torch.tensor([s])
            direct = enc(t, torch.ones_like(t))[0]
            torch.testing.assert_close(cache[i], direct, rtol=0, atol=1e-6)
    p, m = cache.gather(torch.arange(len(ids)))
    assert torch.equal(m.sum(1), cache.lengths)
    # the default fingerprint follows the encoder and the data
    c2 = FeatureCache.build(enc, ids, dtype="fp16", progress=False)
    c3 = FeatureCache.build(enc, ids[:-1], dtype="fp16", progress=False)
    assert c2.fingerprint and c2.fingerprint != c3.fingerprint and c2.path is None


def test_interrupted_build_leaves_no_valid_cache(tmp_path, gen):
    path = tmp_path / "cache"
    enc = TinyEncoder(fail_on_call=3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        FeatureCache.build(enc, random_ids(gen), path=path, batch_size=4, progress=False)
    assert not path.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(CacheError):
        FeatureCache.open(path)
    # an existing valid cache survives a failed rebuild untouched
    FeatureCache.from_tensors(random_seqs(gen), path=path, fingerprint="old")
    before = {f.name: f.read_bytes() for f in path.iterdir()}
    enc = TinyEncoder(fail_on_call=2)
    with pytest.raises(RuntimeError):
        FeatureCache.build(enc, random_ids(gen), path=path, batch_size=4, fingerprint="new",
                           progress=False)
    assert {f.name: f.read_bytes() for f in path.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]
    assert FeatureCache.open(path, verify=True).fingerprint == "old"


def test_get_or_build_reuses_and_rebuilds(tmp_path, gen, caplog):
    path = tmp_path / "c"
    ids = random_ids(gen)
    enc = TinyEncoder()
    kw = dict(batch_size=8, progress=False)
    c1 = get_or_build(path, enc, ids, fingerprint="f1", dtype="int8", **kw)
    n = len(enc.calls)
    assert n > 0 and c1.fingerprint == "f1"
    c2 = get_or_build(path, enc, ids, fingerprint="f1", dtype="int8", **kw)
    assert len(enc.calls) == n and torch.equal(c2.values, c1.values)  # reused, encoder not run
    with caplog.at_level(logging.WARNING, logger="stackft.cache"):
        c3 = get_or_build(path, enc, ids, fingerprint="f2", dtype="int8", **kw)
    assert len(enc.calls) > n and c3.fingerprint == "f2" and "stale" in caplog.text
    n = len(enc.calls)
    vals = path / "values.bin"
    vals.write_bytes(vals.read_bytes()[:-1])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="stackft.cache"):
        c4 = get_or_build(path, enc, ids, fingerprint="f2", dtype="int8", **kw)
    assert len(enc.calls) > n and "rebuilding" in caplog.text
    c4.verify()


def test_cli_info(tmp_path, gen, capsys):
    path = tmp_path / "c"
    FeatureCache.from_tensors([torch.randn(10, 384, generator=gen)], dtype="int8", path=path, fingerprint="zz")
    assert cli_cache.main(["cache", "info", str(path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["dtype"] == "int8" and info["dim"] == 384 and info["total_tokens"] == 10
    assert info["bytes_per_token"] == 386 and info["fingerprint"] == "zz"
    assert set(info["files"]) == {"offsets.bin", "values.bin", "scales.bin"}
    assert cli_cache.main(["cache", "info", str(tmp_path / "nope")]) == 1


def test_cli_build_ext(capsys):
    from stackft import _ext

    if _ext.disabled():
        pytest.skip("STACKFT_NO_EXT is set")
    assert cli_cache.main(["build-ext", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "stackft_C" in out and "CUDA sources:" in out
    assert Path(out.split("library:")[1].split()[0]).exists()


def test_cli_cache_build_without_data_is_clear(capsys):
    from stackft.cli import main

    assert main(["cache", "build"]) == 2
    assert "--train-path is required" in capsys.readouterr().err
    assert main(["cache", "build", "--train-path", "x.csv", "--cache", "off"]) == 2
    assert "makes no cache" in capsys.readouterr().err


@pytest.mark.parametrize("dtype", ["bf16", "int8"])
def test_compact_batch_is_the_same_batch(tmp_path, gen, dtype):
    # what gather() ships to a GPU for a host-resident cache: the batch's rows only
    from stackft.cache.ops import gather_pad

    cache = FeatureCache.from_tensors(random_seqs(gen), dtype=dtype, path=tmp_path / "c")
    idx = torch.tensor([5, 0, 5, 11, 2])
    vals, off, sc = cache.compact(idx)
    assert vals.dtype == cache.values.dtype and off[-1] == vals.shape[0] == int(cache.lengths[idx].sum())
    assert off.tolist()[1:] == cache.lengths[idx].cumsum(0).tolist()
    got = gather_pad(vals, off, torch.arange(5), sc)
    want = cache.gather(idx)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    with pytest.raises(IndexError):
        cache.compact(torch.tensor([len(cache)]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("table", [True, False], ids=["kept-first-rows", "converted-per-call"])
def test_gather_first_is_the_first_position_of_gather(tmp_path, gen, dtype, table, monkeypatch):
    """Both ways gather_first reads: the first rows converted once and kept (a cache under
    FIRST_TABLE_MAX_BYTES), and the batch's rows converted on each call (a larger one)."""
    if not table:
        monkeypatch.setattr(FeatureCache, "FIRST_TABLE_MAX_BYTES", 0)
    seqs = random_seqs(gen)
    seqs[3] = seqs[3][:0]  # an empty sequence: zeros, mask False
    cache = FeatureCache.from_tensors(seqs, dtype=dtype, path=tmp_path / "c")
    idx = torch.tensor([5, 0, 3, 5, 11, 2, 3])
    hidden, mask = cache.gather_first(idx)
    full, full_mask = cache.gather(idx)
    assert hidden.shape == (len(idx), 1, full.shape[2]) and mask.shape == (len(idx), 1)
    assert torch.equal(hidden, full[:, :1]) and torch.equal(mask, full_mask[:, :1])
    assert not mask[2, 0] and not hidden[2].any()
    bf16 = torch.bfloat16
    assert torch.equal(cache.gather_first(idx, out_dtype=bf16)[0], cache.gather(idx, out_dtype=bf16)[0][:, :1])
    for bad in (len(cache), -1, len(cache) + 5):
        with pytest.raises(IndexError, match="out of range"):
            cache.gather_first(torch.tensor([0, bad]))
    full_seqs = [x for x in seqs if len(x)]  # no empty sequence: the fast path (mask all True)
    cache = FeatureCache.from_tensors(full_seqs, dtype=dtype, path=tmp_path / "full")
    idx = torch.tensor([1, 0, 1, len(full_seqs) - 1])
    hidden, mask = cache.gather_first(idx)
    assert torch.equal(hidden, cache.gather(idx)[0][:, :1]) and bool(mask.all())
    assert (cache.__dict__.get("_first_table_") is not None) == table


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", ["bf16", "int8"])
def test_gather_to_cuda(tmp_path, gen, dtype):
    cache = FeatureCache.from_tensors(random_seqs(gen, d=768), dtype=dtype, path=tmp_path / "c")
    idx = torch.tensor([3, 1, 3, 0])
    want = cache.gather(idx)
    for c in (cache, cache.pin_memory(), cache.to("cuda")):
        p, m = c.gather(idx, device="cuda")
        assert p.is_cuda and torch.equal(p.cpu(), want[0]) and torch.equal(m.cpu(), want[1])
