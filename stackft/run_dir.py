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
    .stackft-run.lock    the lock a training holds while it runs (:meth:`RunDir.lock`)

and a checkpoint folder holds ``model.safetensors`` (weights), ``meta.json`` (config, labels,
task, metrics, position, run id, data fingerprint, the size and sha256 of every other file) and,
for ``last/``, ``state.pt`` (optimizer, schedule, stop rule, RNG).

Everything that reads or writes these names goes through :class:`RunDir` and the ``*_FILE``
constants below; nothing else spells them.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import ExitStack, contextmanager
from pathlib import Path

from stackft import _fs

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
LOCK_FILE = ".stackft-run.lock"
TB_EVENTS = "events.out.tfevents."  # TensorBoard event files written into the run folder


class RunFolderInUse(ValueError):
    """The run folder holds a run a new training would replace, or another process is training into it."""


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

    @property
    def lock_file(self) -> Path:
        return self.root / LOCK_FILE

    # -- state -------------------------------------------------------------------------------
    def run_files(self) -> list[Path]:
        """What a run wrote here (files, checkpoint folders, event files); empty for a folder without a run."""
        if not self.root.is_dir():
            return []
        found = []
        for p in sorted(self.root.iterdir()):
            name = p.name
            if name in (CONFIG_FILE, RUN_FILE, METRICS_FILE, SUMMARY_FILE, ENCODER_DIR, BEST_DIR, LAST_DIR) \
                    or name.startswith(TB_EVENTS) or (p.is_dir() and name.endswith(("_chosen", "_end"))
                                                        and is_checkpoint(p)):
                found.append(p)
        return found

    def holds_run(self) -> bool:
        """Whether a run was started here (anything of it a new run would replace)."""
        return bool(self.run_files())

    def describe(self) -> str:
        """What the run here is, in words: finished (with its best score), interrupted (where), or started."""
        if self.is_finished():
            try:
                summary = self.read_summary() or {}
            except ValueError:
                summary = {}
            best = summary.get("best") if isinstance(summary, dict) else None
            score = best.get("score") if isinstance(best, dict) else None
            return "a finished run" + (f" (best dev {summary.get('metric', 'score')} {score:.4g})"
                                       if isinstance(score, (int, float)) else "")
        try:
            pos = self.last_position()
        except ValueError:
            pos = None
        if isinstance(pos, dict) and pos.get("global_step") is not None:
            return f"an unfinished run (last checkpoint at global step {pos['global_step']})"
        return "an unfinished run (no checkpoint yet)"

    def clear(self) -> list[Path]:
        """Delete what a run wrote here (:meth:`run_files`; other files are left alone); returns what went."""
        gone = self.run_files()
        for p in gone:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)
        _fs.clean_stale(self.root)
        return gone

    @contextmanager
    def lock(self):
        """Hold this folder's training lock (:func:`stackft._fs.exclusive_lock`) for the ``with`` block.

        Raises :class:`RunFolderInUse` at once when another live process holds it. Yields the
        description of a previous holder that died without releasing it (its lock is taken over), or None.
        """
        held = ExitStack()
        try:
            stale = held.enter_context(_fs.exclusive_lock(self.lock_file))
        except _fs.LockHeld as e:
            raise RunFolderInUse(
                f"{self.root} is in use: another training ({e.holder}) is writing to it. Wait for it to "
                f"finish, stop it, or train into another output_dir (lock file {e.path})") from None
        with held:
            yield stale

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
