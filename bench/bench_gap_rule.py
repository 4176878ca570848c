"""False-stop rate of the phase-1 stop rules on pure noise (CPU, seconds).

Train-probe and dev accuracies are drawn binomially around the same accuracy ``p`` (a head that
has converged: any gap is noise), ``evals`` evaluations per sequence, ``n`` examples per score.
Prints the fraction of sequences each rule stops: the fixed-tolerance ``gap`` rule and ``gap_se``
for several ``gap_z``. The numbers quoted in docs/methods.md §3.1 come from the defaults::

    python bench/bench_gap_rule.py            # n=300, p=0.8, 10 evaluations, 1000 sequences
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from stackft.training.metrics import accuracy_se
from stackft.training.stopper import PhaseStopper


def false_stop_rate(make_stopper, *, n: int, p: float, evals: int, sequences: int, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    stops = 0
    for _ in range(sequences):
        train, dev = rng.binomial(n, p, evals) / n, rng.binomial(n, p, evals) / n
        s = make_stopper()
        for k, (t, d) in enumerate(zip(train, dev)):
            if s.update(k, t, d, train_se=accuracy_se(t, n), val_se=accuracy_se(d, n)):
                stops += 1
                break
    return stops / sequences


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--p", type=float, default=0.8)
    ap.add_argument("--evals", type=int, default=10)
    ap.add_argument("--sequences", type=int, default=1000)
    ap.add_argument("--gap-tol", type=float, default=0.02)
    ap.add_argument("--z", default="2.0,2.5,3.0")
    a = ap.parse_args(argv)
    kw = dict(n=a.n, p=a.p, evals=a.evals, sequences=a.sequences)
    res = {"settings": vars(a),
           f"gap(tol={a.gap_tol})": false_stop_rate(lambda: PhaseStopper(mode="gap", gap_tol=a.gap_tol,
                                                                          patience=10**6), **kw)}
    for z in (float(x) for x in a.z.split(",")):
        res[f"gap_se(z={z})"] = false_stop_rate(lambda z=z: PhaseStopper(mode="gap_se", gap_z=z, patience=10**6), **kw)
    print(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
