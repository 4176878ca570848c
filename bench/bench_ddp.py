"""Throughput of 1 process vs N DDP processes (torchrun) on the same job and global batch.

Runs ``stackft train`` (finetune-only, the default encoder, one epoch on ``--n-train`` CoNLL
sentences, no evaluation beyond the end of the epoch) once as one process with
``--threads-per-proc * N`` threads, once under ``torchrun --nproc_per_node=N`` with
``--threads-per-proc`` threads each, and prints sentences per second of training.

    python bench/bench_ddp.py --nproc 2 --n-train 400
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_args(a, out):
    return ["train", "--task", "ner", "--strategy", "finetune-only", "--train-path", a.train, "--dev-path", a.dev,
            "--max-train", str(a.n_train), "--max-dev", str(a.n_dev), "--phase2-epochs", "1",
            "--evals-per-epoch", "1", "--batch-size", str(a.batch_size), "--device", a.device,
            "--cache", "off", "--no-progress", "--output-dir", str(out)]


def _timed(cmd, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr[-3000:]}")
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", default="../shared/data/conll2003/train.txt")
    ap.add_argument("--dev", default="../shared/data/conll2003/dev.txt")
    ap.add_argument("--n-train", type=int, default=400)
    ap.add_argument("--n-dev", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--threads-per-proc", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="stackft-ddp-"))
    res = {"n_train": a.n_train, "batch_size": a.batch_size, "nproc": a.nproc, "device": a.device}
    # the phase time in summary.json excludes start-up (imports, data loading, model building)
    runs = {
        "1 process": ([sys.executable, "-m", "stackft", *_train_args(a, tmp / "one")], a.threads_per_proc * a.nproc),
        f"{a.nproc} DDP processes": ([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={a.nproc}",
                                      f"--master_port={_free_port()}", "-m", "stackft",
                                      *_train_args(a, tmp / "ddp")], a.threads_per_proc),
    }
    for (name, (cmd, threads)), d in zip(runs.items(), ("one", "ddp")):
        wall = _timed(cmd, threads)
        summary = json.loads((tmp / d / "summary.json").read_text())
        train_s = summary["phase_times"]["finetune"]
        res[name] = {"wall_s": wall, "phase_s": train_s, "sentences_per_s": a.n_train / train_s,
                     "threads_per_process": threads, "dev_f1": summary["best"]["dev"]["f1"]}
        print(f"{name:>18}: {a.n_train / train_s:7.1f} sentences/s (phase {train_s:.1f} s incl. one dev eval, "
              f"wall {wall:.1f} s, {threads} thread(s) each), dev F1 {summary['best']['dev']['f1']:.4f}")
    one, ddp = res["1 process"], res[f"{a.nproc} DDP processes"]
    res["ddp_over_one"] = ddp["sentences_per_s"] / one["sentences_per_s"]
    print(f"DDP / 1 process throughput: {res['ddp_over_one']:.2f}x")
    out = Path(a.out or Path(__file__).parent / "results" / f"ddp-{a.device}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
