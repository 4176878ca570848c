"""The run folder: every file name a run writes, in one place.

A run folder (``TrainConfig.output_dir``) holds::

    config.json          the TrainConfig the run was started with (a valid TrainConfig.from_dict)
    run.json             the run's identity: run id (also in every checkpoint's meta), start time, and
                         notes a resume reads (a non-finite loss, learning rates changed on resume)
    metrics.jsonl        one JSON object per evaluation (phase, step, loss, dev, train, time)
    summary.json         written once the run finished (best score, phase times, seeds, ...)
    encoder/             the encoder's config and tokenizer, so checkpoints load alone (and its
                         pretrained weights, model.safetensors, only when frozen phases' checkpoints
                         refer to them and cannot re-load them from TrainConfig.encoder)
    best/                checkpoint: the best dev evaluation of the final phase
    last/                checkpoint + state.pt: everything needed to resume
    {phase}_chosen/      checkpoint: the stop rule's current choice while a phase runs
    {phase}_end/         checkpoint: the model the next phase starts from (two-phase strategies)

and a checkpoint folder holds ``model.safetensors`` (weights), ``meta.json`` (config, labels,
task, metrics, position, run id, data fingerprint, the size and sha256 of every other file) and,
for ``last/``, ``state.pt`` (optimizer, schedule, stop rule, RNG).

Everything that reads or writes these names goes through :class:`RunDir` and the ``*_FILE``
constants below; nothing else spells them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

CONFIG_FILE = "config.json"
RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
ENCODER_DIR = "encoder"
BEST_DIR = "best"
LAST_DIR = "last"
WEIGHTS_FILE = "model.safetensors"
META_FILE = "meta.json"
STATE_FILE = "state.pt"


def write_json(path: Path, obj) -> None:
    """Write ``obj`` as JSON atomically (a temporary sibling, then a rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def read_json(path: Path):
    """The JSON object in ``path``, or None when the file does not exist."""
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else None


class RunDir:
    """Paths and small readers of one run folder (see the module docstring for the layout)."""

    def __init__(self, root):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    def __fspath__(self) -> str:
        return str(self.root)

    @classmethod
    def of_checkpoint(cls, checkpoint) -> "RunDir":
        """The run folder a checkpoint folder (``RUN/best``, ``RUN/last``, ...) belongs to."""
        return cls(Path(checkpoint).parent)

    # -- paths ------------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def run_info(self) -> Path:
        return self.root / RUN_FILE

    @property
    def metrics(self) -> Path:
        return self.root / METRICS_FILE

    @property
    def summary(self) -> Path:
        return self.root / SUMMARY_FILE

    @property
    def encoder(self) -> Path:
        return self.root / ENCODER_DIR

    @property
    def best(self) -> Path:
        return self.root / BEST_DIR

    @property
    def last(self) -> Path:
        return self.root / LAST_DIR

    def chosen(self, phase_name: str) -> Path:
        return self.root / f"{phase_name}_chosen"

    def phase_end(self, phase_name: str) -> Path:
        return self.root / f"{phase_name}_end"

    # -- readers ----------------------------------------------------------------------------
    def read_config(self) -> dict | None:
        return read_json(self.config)

    def read_run_info(self) -> dict | None:
        """``run.json`` (run id, start time, resume notes), or None (no run started here by this version)."""
        try:
            info = read_json(self.run_info)
        except ValueError:
            return None
        return info if isinstance(info, dict) else None

    def write_run_info(self, info: dict) -> None:
        write_json(self.run_info, info)

    def read_summary(self) -> dict | None:
        return read_json(self.summary)

    def read_metrics(self) -> list[dict]:
        """The evaluation records of ``metrics.jsonl`` (FileNotFoundError when there are none)."""
        if not self.metrics.exists():
            raise FileNotFoundError(f"no {METRICS_FILE} in {self.root}")
        return [json.loads(line) for line in self.metrics.read_text().splitlines() if line.strip()]

    def last_position(self) -> dict | None:
        """The position (phase, epoch, batch, steps) saved in ``last/``, or None."""
        meta = read_json(self.last / META_FILE)
        return None if meta is None else meta.get("position")

    def is_finished(self) -> bool:
        return self.summary.exists()

    # -- writers ----------------------------------------------------------------------------
    def append_metric(self, record: dict) -> None:
        with open(self.metrics, "a") as f:
            f.write(json.dumps(record) + "\n")

    def write_metrics(self, records) -> None:
        with open(self.metrics, "w") as f:
            for rec in records:
                f.write(json.dumps(rec) + "\n")

    def write_summary(self, summary: dict) -> None:
        self.summary.write_text(json.dumps(summary, indent=2, default=str))


def is_checkpoint(path) -> bool:
    """Whether ``path`` is a checkpoint folder (holds weights and meta)."""
    path = Path(path)
    return (path / WEIGHTS_FILE).exists() and (path / META_FILE).exists()
