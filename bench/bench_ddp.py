"""Throughput of 1 process vs N DDP processes (torchrun) on the same job and global batch.

Runs ``stackft train`` (finetune-only, the default encoder, one epoch on ``--n-train`` CoNLL
sentences, no evaluation beyond the end of the epoch) once as one process with
``--threads-per-proc * N`` threads, once under ``torchrun --nproc_per_node=N`` with
``--threads-per-proc`` threads each, and prints sentences per second of training.

    python bench/bench_ddp.py --data-root DATA --nproc 2 --n-train 400   # DATA/conll2003/{train,dev}.txt
    python bench/bench_ddp.py --demo                   # the CoNLL-2003 excerpt bundled with stackft
    python bench/bench_ddp.py --smoke --out /tmp/ddp.json   # tiny random encoder, a few sentences

Data: ``--train``/``--dev``, ``--data-root`` (default ``$STACKFT_DATA``) or ``--demo``; there is no
default data path. ``--smoke`` checks the plumbing only (its numbers mean nothing) and writes to the
temp folder unless ``--out``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _util as U  # noqa: E402

from stackft.run_dir import RunDir  # noqa: E402

# --smoke: tiny random encoder, a few short sentences (options given explicitly win)
SMOKE = dict(n_train=16, n_dev=8, batch_size=8, max_length=32)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_args(a, out):
    args = ["train", "--task", "ner", "--strategy", "finetune-only", "--train-path", a.train, "--dev-path", a.dev,
            "--max-train", str(a.n_train), "--max-dev", str(a.n_dev), "--phase2-epochs", "1",
            "--evals-per-epoch", "1", "--batch-size", str(a.batch_size), "--device", a.device,
            "--cache", "off", "--no-progress", "--output-dir", str(out)]
    if a.encoder:
        args += ["--encoder", a.encoder]
    if a.max_length:
        args += ["--max-length", str(a.max_length)]
    return args


def _tiny_encoder_dir(root: Path) -> str:
    """A 2 x 32 random BERT with the default tokenizer, saved as a HF folder ``stackft train`` loads."""
    from stackft.modeling.encoders import tiny_random_encoder

    enc = tiny_random_encoder(hidden_size=32, num_layers=2, seed=0)
    path = root / "tiny-bert"
    enc.model.save_pretrained(path)
    enc.tokenizer.save_pretrained(path)
    return str(path)


def _timed(cmd, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr[-3000:]}")
    return time.perf_counter() - t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    U.add_data_args(ap)
    ap.add_argument("--n-train", type=int, default=400)
    ap.add_argument("--n-dev", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--threads-per-proc", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--encoder", default=None, help="HF id or folder for stackft train (default: the packaged MiniLM)")
    ap.add_argument("--max-length", type=int, default=None, help="stackft train --max-length (default: the library's)")
    ap.add_argument("--smoke", action="store_true",
                    help="plumbing check in seconds: a tiny random encoder, "
                         + ", ".join(f"{k}={v}" for k, v in SMOKE.items()) + ", the bundled data unless given")
    ap.add_argument("--out", default=None, help="JSON results file (default bench/results/ddp-<device>.json)")
    a = ap.parse_args(argv)
    if a.smoke:
        for key, value in SMOKE.items():
            if getattr(a, key) == ap.get_default(key):
                setattr(a, key, value)
        if not (a.train or a.dev or a.data_root):
            a.demo = True
    a.train, a.dev = U.conll_paths(ap, a)
    tmp = Path(tempfile.mkdtemp(prefix="stackft-ddp-"))
    if a.smoke and not a.encoder:
        a.encoder = _tiny_encoder_dir(tmp)
    res = {"n_train": a.n_train, "batch_size": a.batch_size, "nproc": a.nproc, "device": a.device}
    if a.smoke:
        res["smoke"] = True
    # the phase time in summary.json excludes start-up (imports, data loading, model building)
    runs = {
        "1 process": ([sys.executable, "-m", "stackft", *_train_args(a, tmp / "one")], a.threads_per_proc * a.nproc),
        f"{a.nproc} DDP processes": ([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={a.nproc}",
                                      f"--master_port={_free_port()}", "-m", "stackft",
                                      *_train_args(a, tmp / "ddp")], a.threads_per_proc),
    }
    for (name, (cmd, threads)), d in zip(runs.items(), ("one", "ddp")):
        wall = _timed(cmd, threads)
        summary = RunDir(tmp / d).read_summary()
        train_s = summary["phase_times"]["finetune"]
        res[name] = {"wall_s": wall, "phase_s": train_s, "sentences_per_s": a.n_train / train_s,
                     "threads_per_process": threads, "dev_f1": summary["best"]["dev"]["f1"]}
        print(f"{name:>18}: {a.n_train / train_s:7.1f} sentences/s (phase {train_s:.1f} s incl. one dev eval, "
              f"wall {wall:.1f} s, {threads} thread(s) each), dev F1 {summary['best']['dev']['f1']:.4f}")
    one, ddp = res["1 process"], res[f"{a.nproc} DDP processes"]
    res["ddp_over_one"] = ddp["sentences_per_s"] / one["sentences_per_s"]
    print(f"DDP / 1 process throughput: {res['ddp_over_one']:.2f}x")
    U.write_json(U.result_path(a.out, f"ddp-{a.device}{'-smoke' if a.smoke else ''}.json", a.smoke), res)
    shutil.rmtree(tmp, ignore_errors=True)
    return res


if __name__ == "__main__":
    main()
