"""Checkpoints: model weights as safetensors, config and metrics as JSON, trainer state for resume.

A checkpoint is a folder ``{model.safetensors, meta.json[, state.pt]}`` (names: :mod:`stackft.run_dir`) written atomically (built
in a temporary sibling, then renamed), so a crash never leaves a half-written checkpoint behind.
A run folder also holds ``encoder/`` (the encoder's config and tokenizer) so a checkpoint can be
loaded without the original encoder files.

Integrity. ``meta.json`` is written last and lists every other file of the folder with its size
and sha256 (``meta["files"]``); :func:`verify` checks them and :func:`load_weights` does so before
loading, so a truncated or altered file is a :class:`CheckpointError` (one line naming the folder)
and never silently used. Checkpoints of older versions (no ``files``) load with a one-time
:class:`CheckpointWarning`. Replacing a folder takes two renames (the old copy aside, the new one
in); a process killed between them leaves the complete new copy beside the old one, and
:func:`recover` (called when a run resumes) puts the newest complete copy back and removes the
leftovers of dead processes.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_model, save_model

from stackft import _fs
from stackft.run_dir import BEST_DIR, ENCODER_DIR, LAST_DIR, META_FILE, STATE_FILE, WEIGHTS_FILE

FILES_KEY = "files"  # meta.json: {file name: {"bytes": int, "sha256": hex}} of every other file


class CheckpointError(ValueError):
    """A checkpoint folder that is damaged, incomplete or does not fit: ``"{folder}: {problem}"``."""

    def __init__(self, path, problem: str):
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")

    def __reduce__(self):
        return (type(self), (self.path, self.problem))


class CheckpointWarning(UserWarning):
    """A checkpoint written by an older stackft: loaded, but without the checks newer ones allow."""


_warned: set = set()


def warn_once(key: str, message: str) -> None:
    """A CheckpointWarning, once per process for each ``key``."""
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, CheckpointWarning, stacklevel=3)


def _atomic_dir(target: Path, write) -> Path:
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _fs.clean_stale(target.parent, target.name)
    tmp = target.parent / _fs.temp_name(target.name)
    tmp.mkdir()
    old = None
    try:
        write(tmp)
        if target.exists():
            old = target.parent / _fs.temp_name(target.name, "old")
            os.replace(target, old)
        _fs.fault_point(f"checkpoint.swap.{target.name}")  # tests: a kill between the two renames
        os.replace(tmp, target)
    except BaseException:
        if old is not None and not target.exists():
            os.replace(old, target)  # put the previous copy back
            old = None
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return target


def save_checkpoint(path, model: torch.nn.Module, meta: dict, state: dict | None = None, *, skip=(),
                    link_weights=None) -> Path:
    """Write ``model.safetensors``, ``meta.json`` and (for resume) ``state.pt`` into ``path``.

    ``skip``: names of tensors left out of ``model.safetensors`` (the pretrained encoder's, while a
    frozen phase leaves them unchanged; ``meta["weights"]`` says where they come from, see
    :func:`write_weights`). ``link_weights``: a checkpoint folder whose ``model.safetensors`` holds
    exactly these weights (saved at the same step), hard-linked instead of written again.
    """

    def write(tmp: Path):
        write_weights(tmp / WEIGHTS_FILE, model, skip=skip, link=link_weights)
        if state is not None:
            torch.save(state, tmp / STATE_FILE)
        # meta.json last, with the checksums of everything else: a folder with a meta.json is complete
        known = _linked_checksum(tmp / WEIGHTS_FILE, link_weights)
        files = {f.name: known.get(f.name) or {"bytes": f.stat().st_size, "sha256": _fs.sha256_file(f)}
                 for f in sorted(tmp.iterdir()) if f.is_file() and f.name != META_FILE}
        (tmp / META_FILE).write_text(json.dumps({**meta, FILES_KEY: files}, indent=2, sort_keys=True, default=str))

    return _atomic_dir(Path(path), write)


def _linked_checksum(file: Path, link) -> dict:
    """``{name: checksum}`` of ``file`` when it is a hard link to ``link``'s weights (hashed when written)."""
    if link is None:
        return {}
    src = Path(link) / WEIGHTS_FILE
    try:
        if not os.path.samefile(file, src):
            return {}
        entry = (read_meta(link).get(FILES_KEY) or {}).get(WEIGHTS_FILE)
    except (OSError, ValueError):
        return {}
    if isinstance(entry, dict) and entry.get("bytes") == file.stat().st_size:
        return {file.name: entry}
    return {}


def verify(path, names=None, *, meta: dict | None = None) -> dict:
    """Check the files ``names`` (default: all that ``meta.json`` lists) against their recorded sizes
    and sha256; returns the meta. CheckpointError on a missing, truncated or altered file; a
    checkpoint of an older version (no checksums) passes with a one-time CheckpointWarning."""
    path = Path(path)
    meta = read_meta(path) if meta is None else meta
    files = meta.get(FILES_KEY)
    if files is None:
        warn_once("no-checksums", f"{path}: written by an older stackft (no checksums in {META_FILE}): "
                                  f"loaded without verifying its files")
        return meta
    if not isinstance(files, dict):
        raise CheckpointError(path, f"{META_FILE} has a malformed {FILES_KEY!r} entry (damaged checkpoint)")
    for name in files if names is None else names:
        info = files.get(name)
        f = path / name
        if not isinstance(info, dict):
            raise CheckpointError(path, f"{META_FILE} records no checksum for {name} (damaged checkpoint)")
        if not f.is_file():
            raise CheckpointError(path, f"{name} is missing (incomplete checkpoint)")
        size = f.stat().st_size
        if size != info.get("bytes"):
            raise CheckpointError(path, f"{name} has {size} bytes, {META_FILE} records {info.get('bytes')} "
                                        f"(truncated or damaged checkpoint)")
        if _fs.sha256_file(f) != info.get("sha256"):
            raise CheckpointError(path, f"checksum mismatch in {name} (damaged checkpoint)")
    return meta


def seal(path) -> dict:
    """Record the current size and sha256 of the checkpoint's files in its meta.json (after a deliberate
    edit of the folder, e.g. reordering a head's classes); returns the new meta."""
    path = Path(path)
    meta = read_meta(path)
    meta[FILES_KEY] = {f.name: {"bytes": f.stat().st_size, "sha256": _fs.sha256_file(f)}
                       for f in sorted(path.iterdir()) if f.is_file() and f.name != META_FILE}
    (path / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
    return meta


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    useful = [ln for ln in lines if "size mismatch" in ln] or lines
    return useful[0] if useful else type(e).__name__


def load_weights(path, model: torch.nn.Module, *, check: bool = True) -> None:
    """Load ``path/model.safetensors`` into ``model`` (strict); ``check``: verify its checksum first.

    CheckpointError (one line naming the folder) when the file is damaged or does not fit ``model``.
    A partial checkpoint (:func:`omits`) loads only the tensors it stores: ``model`` must already
    hold the pretrained encoder tensors it leaves out (the trainer's does; :func:`load_reference`
    puts them in, as ``load_trained`` does).
    """
    path = Path(path)
    f = path / WEIGHTS_FILE
    if not f.exists():
        raise FileNotFoundError(f"no {WEIGHTS_FILE} in {path}")
    if check:
        verify(path, [WEIGHTS_FILE])
    try:
        missing, unexpected = load_model(model, str(f), strict=False)
    except Exception as e:  # a truncated or garbage file, or tensors of other shapes
        hint = " (weights of another task, label set or model?)" if "size mismatch" in str(e) else ""
        raise CheckpointError(path, f"cannot load {WEIGHTS_FILE}: {_first_line(e)}{hint}") from None
    if missing and not unexpected and omits(path, missing):
        missing = []  # a partial checkpoint: the model holds the pretrained tensors it leaves out
    if missing or unexpected:
        raise CheckpointError(path, f"{WEIGHTS_FILE} does not fit the model: missing {missing[:5]}, "
                                    f"unexpected {unexpected[:5]} (weights of another model?)")


def has_weights(path) -> bool:
    """Whether the checkpoint folder ``path`` holds model weights."""
    return (Path(path) / WEIGHTS_FILE).exists()


def read_meta(path) -> dict:
    """The checkpoint's ``meta.json``; FileNotFoundError without one, CheckpointError when it is not a JSON object."""
    f = Path(path) / META_FILE
    if not f.exists():
        raise FileNotFoundError(f"{path} is not a stackft checkpoint (no {META_FILE})")
    try:
        text = f.read_text()
        meta = json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        what = "is empty" if not f.stat().st_size else f"is not valid JSON ({e})"
        raise CheckpointError(path, f"{META_FILE} {what} (damaged checkpoint)") from None
    if not isinstance(meta, dict):
        raise CheckpointError(path, f"{META_FILE} holds a {type(meta).__name__}, not an object (damaged checkpoint)")
    return meta


def check_meta(path, meta: dict) -> dict:
    """CheckpointError unless ``meta`` has what rebuilding the model needs, with the right types."""
    def bad(key, want):
        raise CheckpointError(path, f"{META_FILE}: {key!r} is {meta.get(key)!r}, expected {want} (damaged checkpoint)")

    if not isinstance(meta.get("config"), dict):
        bad("config", "an object (the TrainConfig)")
    for key in ("task", "head"):
        if not isinstance(meta.get(key), str) or not meta[key]:
            bad(key, "a name")
    labels = meta.get("labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        bad("labels", "a non-empty list of label names")
    ml = meta.get("max_length")
    if isinstance(ml, bool) or not isinstance(ml, int) or ml < 1:
        bad("max_length", "a positive integer")
    if meta.get("pair_mode") not in (None, "joint", "siamese"):
        bad("pair_mode", "'joint' or 'siamese'")
    return meta


def nonfinite(tensors) -> list[str]:
    """Names of the floating-point tensors of ``tensors`` (a name -> tensor mapping) with a NaN or an inf."""
    items = [(k, t) for k, t in tensors.items() if torch.is_tensor(t) and t.is_floating_point() and t.numel()]
    if not items:
        return []
    ok = torch.stack([torch.isfinite(t).all() for _, t in items])
    if bool(ok.all()):
        return []
    return [k for (k, _), good in zip(items, ok.tolist()) if not good]


def optimizer_tensors(optimizer) -> dict:
    """The optimizer state's tensors (moments, ...), by ``"<param index>.<name>"``."""
    out = {}
    for i, st in enumerate(optimizer.state.values()):
        for k, v in st.items():
            if torch.is_tensor(v):
                out[f"{i}.{k}"] = v
    return out


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_encoder_files(encoder, run_dir) -> Path:
    """Save the encoder's config and tokenizer (no weights) to ``run_dir/encoder``."""
    def write(tmp: Path):
        encoder.model.config.save_pretrained(tmp)
        if encoder.tokenizer is not None:
            encoder.tokenizer.save_pretrained(tmp)

    return _atomic_dir(Path(run_dir) / ENCODER_DIR, write)


def _complete(path: Path) -> dict | None:
    """The meta of a complete checkpoint folder (all listed files intact), else None."""
    try:
        meta = read_meta(path)
        if FILES_KEY in meta:
            verify(path, meta=meta)
        elif not (path / WEIGHTS_FILE).is_file():
            return None
        return meta
    except (OSError, ValueError):
        return None


def _owned_by_live_process(path: Path) -> bool:
    info = _fs.parse_temp(path.name)
    if info is None:
        return False  # older versions' names: the run being resumed owns them
    if info["host"] is not None and info["host"] != _fs.host_tag():
        return True  # cannot be checked from here
    return info["pid"] != os.getpid() and _fs.pid_alive(info["pid"])


def recover(target) -> str | None:
    """Repair what a process killed while replacing the checkpoint folder ``target`` left behind.

    When ``target`` is missing, the newest complete copy among its temporary siblings (the new copy
    being renamed in, or the old one set aside) becomes ``target``; the other leftovers of dead
    processes are removed. Returns a note of what was recovered, or None.
    """
    target = Path(target)
    if not target.parent.is_dir():
        return None
    prefix = f".{target.name}."
    parts = [p for p in target.parent.iterdir()
             if p.name.startswith(prefix) and p.is_dir() and not _owned_by_live_process(p)]
    parts = [p for p in parts if (_fs.parse_temp(p.name) or {"target": target.name})["target"] == target.name]
    note = None
    if not target.exists():
        found = [(meta, p) for p in parts if (meta := _complete(p)) is not None]
        if found:
            def newer(item):
                meta, p = item
                info = _fs.parse_temp(p.name)
                is_new = (info["kind"] == "tmp") if info else not p.name.endswith(".old")
                step = (meta.get("position") or {}).get("global_step", -1)
                return (step if isinstance(step, int) else -1, is_new, p.stat().st_mtime)

            meta, best = max(found, key=newer)
            os.replace(best, target)
            parts.remove(best)
            pos = meta.get("position") or {}
            note = (f"recovered {target} from {best.name}, a complete copy (global step {pos.get('global_step', '?')}) "
                    f"left by a process killed while it replaced {target.name}/")
    for p in parts:
        shutil.rmtree(p, ignore_errors=True)
    return note


def recover_all(run_root) -> list[str]:
    """:func:`recover` every checkpoint folder of the run folder ``run_root`` that has leftovers."""
    root = Path(run_root)
    if not root.is_dir():
        return []
    targets = set()
    for p in root.iterdir():
        if not (p.is_dir() and p.name.startswith(".")):
            continue
        info = _fs.parse_temp(p.name)
        if info is not None:
            targets.add(info["target"])
        elif p.name.count(".") >= 2:  # older versions: .NAME.old, .NAME.<random>, of checkpoint folders only
            name = p.name[1:].rsplit(".", 1)[0]
            if name in (LAST_DIR, BEST_DIR, ENCODER_DIR) or name.endswith(("_chosen", "_end")):
                targets.add(name)
    notes = [recover(root / t) for t in sorted(targets)]
    return [n for n in notes if n]


# -- partial checkpoints: the tensors a run changed, plus a reference to the pretrained encoder ---------
#
# While a frozen phase leaves the pretrained encoder unchanged, its checkpoints store only the other
# tensors (the head, PET modules): a few MB instead of a full model copy each. ``meta["weights"]``
# says so: how many tensors were left out (all under ``encoder.``), the sha256 of their values, and
# where they come from: ``{"kind": "source", "encoder": <TrainConfig.encoder>}`` (loaded again from
# the encoder the run named) or ``{"kind": "run"}`` (the run folder's ``encoder/model.safetensors``,
# written once per run when the trainer was handed an encoder it could not trace to its source).

WEIGHTS_KEY = "weights"
ENCODER_PREFIX = "encoder."


def write_weights(file, model: torch.nn.Module, *, skip=(), link=None) -> None:
    """``model``'s tensors but those named in ``skip`` as safetensors at ``file``; with ``link`` (a
    checkpoint folder holding these very weights) a hard link to its file instead, when possible."""
    file = Path(file)
    if link is not None:
        try:
            os.link(Path(link) / WEIGHTS_FILE, file)
            return
        except OSError:
            pass  # another file system, or no links allowed: write it
    skip = set(skip)
    if not skip:
        save_model(model, str(file))
        return
    from safetensors.torch import save_file

    out, seen = {}, set()
    for name, t in model.state_dict().items():
        if name in skip:
            continue
        key = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype)
        if t.numel() and key in seen:  # a tensor shared under two names is stored once, as save_model does
            continue
        seen.add(key)
        out[name] = t.detach().contiguous()
    save_file(out, str(file), metadata={"format": "pt"})


def stored_names(path) -> set[str]:
    """The names of the tensors checkpoint folder ``path`` stores."""
    from safetensors import safe_open

    with safe_open(str(Path(path) / WEIGHTS_FILE), framework="pt") as f:
        return set(f.keys())


def weights_info(path) -> dict | None:
    """``meta["weights"]`` of a partial checkpoint, else None (it stores every tensor)."""
    try:
        info = read_meta(path).get(WEIGHTS_KEY)
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and info.get("omitted") else None


def omits(path, missing) -> bool:
    """Whether checkpoint ``path`` declares that it leaves out exactly the encoder tensors ``missing``."""
    info = weights_info(path)
    return (info is not None and info.get("omitted") == len(missing)
            and all(k.startswith(info.get("prefix", ENCODER_PREFIX)) for k in missing))


def tensors_digest(state: dict, names) -> str:
    """sha256 over the names, dtypes and bytes of the tensors ``names`` of ``state``."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(names):
        t = state[name].detach().to("cpu").contiguous().reshape(-1)
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def weights_entry(skip, digest: str, reference: dict) -> dict:
    """``meta["weights"]`` of a checkpoint that leaves out the tensors ``skip`` (``digest``: their sha256)."""
    return {"omitted": len(skip), "prefix": ENCODER_PREFIX, "digest": digest, "reference": dict(reference)}


def check_reference(path, model: torch.nn.Module, info: dict | None = None) -> None:
    """CheckpointError unless ``model`` holds the very pretrained tensors partial checkpoint ``path`` left out."""
    info = weights_info(path) if info is None else info
    if info is None:
        return
    state = model.state_dict()
    stored, prefix = stored_names(path), info.get("prefix", ENCODER_PREFIX)
    names = sorted(k for k in state if k not in stored and k.startswith(prefix))
    if len(names) != info.get("omitted") or tensors_digest(state, names) != info.get("digest"):
        ref = info.get("reference") or {}
        src = ("the run folder's encoder/model.safetensors" if ref.get("kind") == "run"
               else f"the pretrained encoder {ref.get('encoder') or 'minilm'!r}")
        raise CheckpointError(path, f"stores only the weights trained on a frozen encoder; the encoder weights "
                                    f"come from {src}, which differ from the ones this run trained with "
                                    f"(changed since?)")


def save_reference_encoder(encoder, run_dir) -> Path:
    """The encoder's weights as ``run_dir/encoder/model.safetensors`` (the run's own pretrained reference)."""
    target = Path(run_dir) / ENCODER_DIR / WEIGHTS_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    save_model(encoder.model, str(tmp))
    os.replace(tmp, target)
    return target
