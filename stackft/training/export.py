"""Export a trained model as a self-contained folder (``stackft export RUN/best OUT``).

:func:`export_model` writes::

    OUT/README.md            model card: what was trained, dev metrics, how to load it, the training config
    OUT/stackft_export.json  what load_exported reads: format version, task, head, labels, max_length,
                             pair encoding, dev metrics, the training config, the source checkpoint
    OUT/model.safetensors    every weight of the model (encoder and head)
    OUT/encoder/             the encoder's config and tokenizer
    OUT/labels.json          the label map: {"id2label": {"0": ...}, "label2id": {...}}
    OUT/train_config.json    the TrainConfig (a valid ``stackft train --config``)
    OUT/hf/                  where the model is exactly a transformers model: a standard
                             AutoModelFor{Sequence,Token}Classification folder (see below)

and :func:`load_exported` (``stackft.load_exported(OUT)``) loads it back in one call, with nothing
else needed (no run folder, no encoder download); ``stackft predict OUT`` and
:func:`stackft.predict_texts` take the folder too. Every export is checked before it is kept: the
reloaded model must give the source model's logits.

**The plain-transformers folder** (``hf/``). A head goes there only when a transformers class
computes exactly the same function, which :func:`to_transformers` decides and a logit check confirms:

- the 2-FC sequence head (``fc``, finetune-only's head for classification) on a BERT encoder ->
  ``DistilBertForSequenceClassification``. stackft's head is ``Linear(H,H) -> ReLU -> Dropout ->
  Linear(H,C)`` on the first token; BERT's own classifier (``BertForSequenceClassification``) puts
  a *tanh* pooler there, so it cannot hold it, while DistilBERT's is exactly ``pre_classifier ->
  ReLU -> dropout -> classifier`` on the first token. A BERT encoder layer is a DistilBERT block
  (same post-LayerNorm attention and feed-forward sublayers; the weights are renamed, not changed);
  DistilBERT has no segment embeddings, so BERT's segment-0 embedding is added into the word
  embeddings (``word + segment0`` is the sum BERT computes for single texts, so the embeddings are
  the same numbers). Needs single texts (not pairs: their segment-1 tokens have no place in
  DistilBERT), ``layer_norm_eps`` 1e-12 (DistilBERT's fixed value), absolute positions, the last
  hidden layer (``layers=-1``) and ``inner_size`` = hidden size. The saved tokenizer lists only
  ``input_ids`` and ``attention_mask`` as model inputs and truncates at the run's ``max_length``.
- the linear token head (``linear``, LP-FT's head for NER) -> ``AutoModelForTokenClassification`` of
  the encoder's own type (``dropout -> classifier`` on every token is what it computes).
- nothing else: the 2-FC *token* head (finetune-only's NER head: ``Linear -> ReLU -> Linear`` per
  token) has no counterpart, since every token-classification head in transformers is a single
  Linear layer (e.g. ``BertForTokenClassification``: dropout + ``classifier``); nor have the
  linear sequence head (BERT's pooler adds a tanh layer), 2-FC heads on joint pairs (DistilBERT
  has no segment embeddings; BERT's pooler is tanh), or the stacked heads (BiLSTM, DenseNet,
  BiMPM, ...). Those models are exported in the stackft format only, and the export says why.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import fields
from pathlib import Path

import torch
from safetensors.torch import load_model as load_safetensors
from safetensors.torch import save_model as save_safetensors

from stackft.config import TrainConfig
from stackft.data.batching import collate
from stackft.data.conll import TaggedSentence
from stackft.data.pairs import PairExample
from stackft.data.textcls import TextExample
from stackft.data.unlabelled import encode_unlabelled
from stackft.modeling.encoders import Encoder
from stackft.modeling.heads import FCSequenceHead, FCTokenHead, LinearSequenceHead, LinearTokenHead
from stackft.run_dir import META_FILE, RunDir

EXPORT_FILE = "stackft_export.json"
FORMAT = "stackft-export"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
ENCODER_DIR = "encoder"
LABELS_FILE = "labels.json"
TRAIN_CONFIG_FILE = "train_config.json"
CARD_FILE = "README.md"
HF_DIR = "hf"
TRANSFORMERS_MODES = ("auto", "yes", "no")

# how close the re-loaded model's logits must be (the same weights and code: equal in practice)
_RELOAD_TOL = dict(atol=1e-6, rtol=1e-6)
# how close the transformers model's logits must be (float32 rounding of the same function)
_HF_TOL = dict(atol=1e-4, rtol=1e-4)

FC_TOKEN_REASON = (
    "the 2-FC token head (Linear -> ReLU -> Linear on every token) has no counterpart in transformers: every "
    "AutoModelForTokenClassification head is a single Linear layer (BertForTokenClassification: dropout + "
    "classifier), so this model is exported in the stackft format only")
PAIRS_REASON = (
    "a 2-FC head on jointly encoded pairs has no counterpart in transformers: DistilBertForSequenceClassification "
    "(the one classifier that is Linear -> ReLU -> Linear on the first token) has no segment embeddings for the "
    "second text, and BertForSequenceClassification's pooler is tanh, not ReLU")
LINEAR_SEQUENCE_REASON = (
    "the linear sequence head (one Linear on the first token) has no counterpart in transformers: "
    "BertForSequenceClassification adds its tanh pooler layer before the classifier")


class NotRepresentable(ValueError):
    """The model has no exactly equal transformers counterpart (the message says why)."""


# -- paths ----------------------------------------------------------------------------------------

def is_export(path) -> bool:
    """Whether ``path`` is a folder written by :func:`export_model`."""
    return (Path(path) / EXPORT_FILE).is_file()


def resolve_checkpoint(path) -> Path:
    """A checkpoint folder (with meta.json) as given, or a run folder's ``best/``."""
    path = Path(path)
    if (path / META_FILE).exists():
        return path
    if (RunDir(path).best / META_FILE).exists():
        return RunDir(path).best
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    raise FileNotFoundError(f"{path} is neither a stackft checkpoint ({META_FILE}) nor a run folder with best/")


# -- loading --------------------------------------------------------------------------------------

def read_export_info(path) -> dict:
    f = Path(path) / EXPORT_FILE
    if not f.is_file():
        raise FileNotFoundError(f"{path} is not a stackft export (no {EXPORT_FILE})")
    info = json.loads(f.read_text())
    if info.get("format") != FORMAT:
        raise ValueError(f"{f}: not a stackft export (format {info.get('format')!r})")
    if int(info.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(f"{f}: export format version {info['format_version']} is newer than this stackft "
                         f"reads ({FORMAT_VERSION}); upgrade stackft")
    return info


def _train_config(d: dict) -> TrainConfig:
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(d) - known)
    if unknown:  # written by a newer stackft: the settings that shape the model are all known ones
        warnings.warn(f"ignoring training settings this stackft does not know: {unknown}", stacklevel=3)
    return TrainConfig.from_dict({k: v for k, v in d.items() if k in known})


def load_exported(path, *, device: str = "cpu"):
    """``(model, meta)`` of an export folder: the StackModel in eval mode on ``device`` and its meta
    (task, labels, max_length, pair_mode, config, metrics, ...), also attached as ``model.stackft_meta``."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from stackft.training.trainer import build_model

    path = Path(path)
    meta = read_export_info(path)["meta"]
    cfg = _train_config(meta["config"])
    enc_dir = path / ENCODER_DIR
    config = AutoConfig.from_pretrained(enc_dir)
    try:
        hf_model = AutoModel.from_config(config, add_pooling_layer=False)
    except TypeError:
        hf_model = AutoModel.from_config(config)
    encoder = Encoder(hf_model, AutoTokenizer.from_pretrained(enc_dir), name_or_path=str(cfg.encoder),
                      layers=cfg.layers)
    model = build_model(cfg, encoder, len(meta["labels"]))
    missing, unexpected = load_safetensors(model, str(path / WEIGHTS_FILE), strict=False)
    if missing or unexpected:
        raise RuntimeError(f"{path / WEIGHTS_FILE} does not fit the model: missing {list(missing)[:5]}, "
                           f"unexpected {list(unexpected)[:5]}")
    model.stackft_meta = meta
    return model.to(device).eval(), meta


# -- probe inputs: what every export is checked on ------------------------------------------------

_PROBE_WORDS = [["John", "Smith", "lives", "in", "Paris", "."],
                ["stackft", "exports", "a", "model", ",", "and", "checks", "it", "twice", "!"], ["Hello"]]
_PROBE_PAIRS = [("How do I export a model?", "How can a trained model be exported?"),
                ("What is the capital of France?", "Paris"), ("a", "b c d e f g")]


def probe_batch(model, meta) -> dict:
    """A small padded batch of fixed inputs, encoded as the model's training data was."""
    task = meta["task"]
    if task == "ner":
        examples = [TaggedSentence(w, ["O"] * len(w), i) for i, w in enumerate(_PROBE_WORDS)]
    elif task == "pairs":
        examples = [PairExample(a, b, None, None, i) for i, (a, b) in enumerate(_PROBE_PAIRS)]
    else:
        examples = [TextExample(" ".join(w), None, i) for i, w in enumerate(_PROBE_WORDS)]
    ds = encode_unlabelled(task, examples, model.encoder.tokenizer, meta["labels"], max_length=meta["max_length"],
                           pair_mode=meta.get("pair_mode") or "joint")
    return collate([ds[i] for i in range(len(ds))], model.encoder.pad_id)


@torch.no_grad()
def _logits(model, batch) -> torch.Tensor:
    was = model.training
    model.eval()
    try:
        return model(batch).float()
    finally:
        model.train(was)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    d = (a - b).abs()
    return float(d.max()) if d.numel() else 0.0


# -- the transformers counterpart -----------------------------------------------------------------

def _head_dropout(head) -> float:
    dropout = getattr(head, "dropout", None)
    return float(dropout.p) if isinstance(dropout, torch.nn.Dropout) else 0.1


def _label_maps(labels) -> tuple[dict, dict]:
    return {i: label for i, label in enumerate(labels)}, {label: i for i, label in enumerate(labels)}


def _fc_sequence_to_distilbert(model, meta):
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    enc, head = model.encoder, model.head
    cfg = enc.model.config
    why = []
    if getattr(cfg, "model_type", None) != "bert":
        why.append(f"the encoder is {getattr(cfg, 'model_type', '?')!r}, and only a BERT encoder maps onto "
                   f"DistilBERT's blocks (the one transformers classifier that is Linear -> ReLU -> Linear)")
    if getattr(cfg, "position_embedding_type", "absolute") not in (None, "absolute"):
        why.append(f"position_embedding_type {cfg.position_embedding_type!r} (DistilBERT: absolute)")
    if abs(float(getattr(cfg, "layer_norm_eps", 1e-12)) - 1e-12) > 1e-20:
        why.append(f"layer_norm_eps {cfg.layer_norm_eps} (DistilBERT's is fixed at 1e-12)")
    if not isinstance(getattr(cfg, "hidden_act", None), str):
        why.append("a non-standard hidden_act")
    if head.fc1.out_features != enc.hidden_size:
        why.append(f"inner_size {head.fc1.out_features} != hidden size {enc.hidden_size} (DistilBERT's "
                   f"pre_classifier is square)")
    if getattr(cfg, "is_decoder", False):
        why.append("a decoder encoder")
    if why:
        raise NotRepresentable("no exact transformers counterpart: " + "; ".join(why))
    id2label, label2id = _label_maps(meta["labels"])
    dcfg = DistilBertConfig(
        vocab_size=cfg.vocab_size, max_position_embeddings=cfg.max_position_embeddings, sinusoidal_pos_embds=False,
        n_layers=cfg.num_hidden_layers, n_heads=cfg.num_attention_heads, dim=cfg.hidden_size,
        hidden_dim=cfg.intermediate_size, dropout=cfg.hidden_dropout_prob,
        attention_dropout=cfg.attention_probs_dropout_prob, activation=cfg.hidden_act,
        initializer_range=getattr(cfg, "initializer_range", 0.02), seq_classif_dropout=_head_dropout(head),
        pad_token_id=cfg.pad_token_id if cfg.pad_token_id is not None else 0,
        id2label=id2label, label2id=label2id)
    src = {k: v.detach().float().cpu() for k, v in enc.model.state_dict().items()}
    dst = {
        # DistilBERT has no segment embeddings: single texts are all segment 0, whose embedding
        # BERT adds to the word embedding before the position embedding, as here
        "distilbert.embeddings.word_embeddings.weight":
            src["embeddings.word_embeddings.weight"] + src["embeddings.token_type_embeddings.weight"][0],
        "distilbert.embeddings.position_embeddings.weight": src["embeddings.position_embeddings.weight"],
        "distilbert.embeddings.LayerNorm.weight": src["embeddings.LayerNorm.weight"],
        "distilbert.embeddings.LayerNorm.bias": src["embeddings.LayerNorm.bias"],
    }
    renames = {"attention.self.query": "attention.q_lin", "attention.self.key": "attention.k_lin",
               "attention.self.value": "attention.v_lin", "attention.output.dense": "attention.out_lin",
               "attention.output.LayerNorm": "sa_layer_norm", "intermediate.dense": "ffn.lin1",
               "output.dense": "ffn.lin2", "output.LayerNorm": "output_layer_norm"}
    for i in range(cfg.num_hidden_layers):
        for old, new in renames.items():
            for p in ("weight", "bias"):
                dst[f"distilbert.transformer.layer.{i}.{new}.{p}"] = src[f"encoder.layer.{i}.{old}.{p}"]
    for name, layer in (("pre_classifier", head.fc1), ("classifier", head.fc2)):
        dst[f"{name}.weight"] = layer.weight.detach().float().cpu()
        dst[f"{name}.bias"] = layer.bias.detach().float().cpu()
    used = {k for k in src if not k.startswith("embeddings.token_type_embeddings")}
    mapped = {f"embeddings.{n}" for n in ("word_embeddings.weight", "position_embeddings.weight",
                                          "LayerNorm.weight", "LayerNorm.bias")}
    mapped |= {f"encoder.layer.{i}.{old}.{p}" for i in range(cfg.num_hidden_layers) for old in renames
               for p in ("weight", "bias")}
    if used - mapped:
        raise NotRepresentable(f"encoder weights DistilBERT has no place for: {sorted(used - mapped)[:5]}")
    hf = DistilBertForSequenceClassification(dcfg)
    hf.load_state_dict(dst, strict=True)
    return hf.eval(), {"input_names": ["input_ids", "attention_mask"],
                       "mapping": "BERT encoder + 2-FC head -> DistilBertForSequenceClassification "
                                  "(segment-0 embedding added into the word embeddings)"}


def _linear_token_to_auto(model, meta):
    from transformers import AutoModelForTokenClassification

    enc, head = model.encoder, model.head
    cfg = copy.deepcopy(enc.model.config)
    id2label, label2id = _label_maps(meta["labels"])
    cfg.num_labels = len(meta["labels"])
    cfg.id2label, cfg.label2id = id2label, label2id
    cfg.classifier_dropout = _head_dropout(head)
    try:
        hf = AutoModelForTokenClassification.from_config(cfg)
    except ValueError as exc:
        raise NotRepresentable(f"transformers has no token-classification model for this encoder: {exc}") from None
    classifier = getattr(hf, "classifier", None)
    if not isinstance(classifier, torch.nn.Linear) or classifier.weight.shape != head.out.weight.shape:
        raise NotRepresentable(f"{type(hf).__name__}'s classifier is not one Linear({enc.hidden_size}, "
                               f"{len(meta['labels'])}) layer")
    missing, unexpected = hf.base_model.load_state_dict(enc.model.state_dict(), strict=False)
    if missing or unexpected:
        raise NotRepresentable(f"{type(hf).__name__}'s encoder does not take these weights "
                               f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})")
    with torch.no_grad():
        classifier.weight.copy_(head.out.weight)
        classifier.bias.copy_(head.out.bias)
    return hf.eval(), {"input_names": None,
                       "mapping": f"encoder + linear token head -> {type(hf).__name__} (weights unchanged)"}


def to_transformers(model, meta):
    """``(transformers model, info)`` computing exactly what ``model`` computes, or NotRepresentable(why).

    ``info``: ``input_names`` (the inputs the transformers model takes; None: the tokenizer's own)
    and ``mapping`` (one line). See the module docstring for which heads map.
    """
    head = model.head
    if tuple(model.encoder.layers) != (-1,):
        raise NotRepresentable(f"the head reads the mean of hidden layers {list(model.encoder.layers)}; "
                               f"transformers classifiers read the last layer only")
    if isinstance(head, FCSequenceHead):
        if meta["task"] == "pairs":
            raise NotRepresentable(PAIRS_REASON)
        return _fc_sequence_to_distilbert(model, meta)
    if isinstance(head, LinearTokenHead):
        return _linear_token_to_auto(model, meta)
    if isinstance(head, FCTokenHead):
        raise NotRepresentable(FC_TOKEN_REASON)
    if isinstance(head, LinearSequenceHead):
        raise NotRepresentable(LINEAR_SEQUENCE_REASON)
    raise NotRepresentable(f"the {meta.get('head') or type(head).__name__} head has no counterpart among the "
                           f"transformers classification heads (only the 2-FC sequence head and the linear token "
                           f"head have one)")


@torch.no_grad()
def transformers_logits(hf_model, batch: dict, input_names=None) -> torch.Tensor:
    """The transformers model's logits for a stackft batch (its ``input_ids``, masks and segments)."""
    names = input_names or ["input_ids", "attention_mask", "token_type_ids"]
    return hf_model(**{k: batch[k] for k in names if k in batch}).logits.float()


def _save_transformers(hf_model, info, tokenizer, max_length: int, out: Path) -> None:
    hf_model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    f = out / "tokenizer_config.json"
    tc = json.loads(f.read_text()) if f.exists() else {}
    tc["model_max_length"] = int(max_length)  # truncation=True cuts where stackft did
    if info.get("input_names"):
        tc["model_input_names"] = list(info["input_names"])
    f.write_text(json.dumps(tc, indent=2, sort_keys=True, ensure_ascii=False))


# -- export ---------------------------------------------------------------------------------------

def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str, ensure_ascii=False) + "\n")


def export_model(checkpoint, out, *, transformers: str = "auto", overwrite: bool = False) -> dict:
    """Write the self-contained export folder ``out`` of a checkpoint (``RUN/best``) or run folder.

    ``transformers``: ``auto`` writes ``hf/`` where the model maps exactly onto a transformers class
    (see the module docstring) and says why not otherwise; ``yes`` fails (NotRepresentable) when it
    does not map; ``no`` never writes it. ``overwrite``: replace an existing ``out``.

    Returns ``{"out", "source", "task", "head", "strategy", "transformers": path or None,
    "transformers_class", "transformers_reason", "reload_max_diff", "transformers_max_diff"}``.
    """
    from stackft.training.trainer import load_trained

    if transformers not in TRANSFORMERS_MODES:
        raise ValueError(f"transformers must be one of {TRANSFORMERS_MODES}, got {transformers!r}")
    source = resolve_checkpoint(checkpoint)
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists (pass overwrite=True, or --overwrite, to replace it)")
    if out.resolve() == source.resolve() or source.resolve() in out.resolve().parents:
        raise ValueError(f"export folder {out} must not be inside the checkpoint {source}")
    model, meta = load_trained(source, device="cpu")
    meta = dict(meta)
    batch = probe_batch(model, meta)
    reference = _logits(model, batch)

    hf, info, reason = None, {}, None
    if transformers != "no":
        try:
            hf, info = to_transformers(model, meta)
            got = transformers_logits(hf, batch, info.get("input_names"))
            if got.shape != reference.shape:
                raise NotRepresentable(f"the converted {type(hf).__name__} gives logits of shape {tuple(got.shape)}, "
                                       f"not {tuple(reference.shape)}")
            mask = batch["attention_mask"].bool() if reference.dim() == 3 else None  # padding is not compared
            a, b = (got[mask], reference[mask]) if mask is not None else (got, reference)
            diff = info["max_diff"] = _max_diff(a, b)
            if not torch.allclose(a, b, **_HF_TOL):
                raise NotRepresentable(f"the converted {type(hf).__name__} gives other logits (max |diff| {diff:.3g})")
        except NotRepresentable as exc:
            if transformers == "yes":
                raise
            hf, reason = None, str(exc)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        save_safetensors(model, str(tmp / WEIGHTS_FILE))
        model.encoder.model.config.save_pretrained(tmp / ENCODER_DIR)
        model.encoder.tokenizer.save_pretrained(tmp / ENCODER_DIR)
        id2label, label2id = _label_maps(meta["labels"])
        _write_json(tmp / LABELS_FILE, {"id2label": {str(k): v for k, v in id2label.items()}, "label2id": label2id})
        _write_json(tmp / TRAIN_CONFIG_FILE, meta["config"])
        from stackft import __version__

        hf_info = None
        if hf is not None:
            _save_transformers(hf, info, model.encoder.tokenizer, meta["max_length"], tmp / HF_DIR)
            hf_info = {"folder": HF_DIR, "class": type(hf).__name__, "mapping": info["mapping"],
                       "max_diff": info["max_diff"], "input_names": info.get("input_names")}
        summary = RunDir.of_checkpoint(source).read_summary() if source.parent.exists() else None
        export_info = {"format": FORMAT, "format_version": FORMAT_VERSION, "stackft_version": __version__,
                       "source": str(source), "meta": meta, "transformers": hf_info,
                       "transformers_reason": reason}
        _write_json(tmp / EXPORT_FILE, export_info)
        (tmp / CARD_FILE).write_text(model_card(export_info, summary=summary, out_name=out.name))

        reloaded, _ = load_exported(tmp)
        again = _logits(reloaded, batch)
        reload_diff = _max_diff(again, reference)
        if again.shape != reference.shape or not torch.allclose(again, reference, **_RELOAD_TOL):
            raise RuntimeError(f"the exported model does not reproduce the checkpoint's logits "
                               f"(max |diff| {reload_diff:.3g}); nothing was written to {out}")
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"out": str(out), "source": str(source), "task": meta["task"], "head": meta.get("head"),
            "strategy": meta["config"].get("strategy"),
            "transformers": str(out / HF_DIR) if hf is not None else None,
            "transformers_class": type(hf).__name__ if hf is not None else None,
            "transformers_reason": reason, "reload_max_diff": reload_diff,
            "transformers_max_diff": info.get("max_diff") if hf is not None else None}


# -- the model card -------------------------------------------------------------------------------

_TASK_WORDS = {"ner": "named-entity recognition (token classification)",
               "classification": "text classification", "pairs": "sentence-pair classification"}
_EXAMPLES = {"ner": '["John lives in Paris ."]', "classification": '["an example text"]',
             "pairs": '[("How do I export a model?", "How is a model exported?")]'}


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def model_card(info: dict, *, summary: dict | None = None, out_name: str = "OUT") -> str:
    """The README.md of an export folder (markdown)."""
    meta = info["meta"]
    cfg = meta.get("config", {})
    task = meta["task"]
    metrics = {k: v for k, v in (meta.get("metrics") or {}).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    position = meta.get("position") or {}
    lines = [
        f"# {cfg.get('strategy', '?')} {task} model ({meta.get('head')} head)",
        "",
        f"Exported by stackft {info.get('stackft_version')} from `{info.get('source')}`: "
        f"{_TASK_WORDS.get(task, task)}.",
        "",
        "| | |",
        "|---|---|",
        f"| task | {task} |",
        f"| strategy | {cfg.get('strategy')} |",
        f"| head | {meta.get('head')} |",
        f"| encoder | {cfg.get('encoder') or 'default (all-MiniLM-L6-v2)'} (hidden size {meta.get('encoder_hidden_size')}) |",
        f"| labels | {', '.join(map(str, meta['labels']))} |",
        f"| max length | {meta.get('max_length')} tokens |",
    ]
    if task == "pairs":
        lines.append(f"| pair encoding | {meta.get('pair_mode')} |")
    lines.append(f"| training data | {cfg.get('train_path')} (dev: {cfg.get('dev_path') or 'split from it'}) |")
    lines.append(f"| seeds | init {cfg.get('init_seed')}, data {cfg.get('data_seed')} |")
    lines += ["", "## Dev metrics", ""]
    if metrics:
        where = ""
        if summary and isinstance(summary.get("best"), dict):
            best = summary["best"]
            where = f" (the best evaluation: {best.get('phase')}, step {best.get('step')})"
        elif position:
            where = f" (phase {position.get('phase')}, step {position.get('phase_step')})"
        lines += [f"Of the exported checkpoint on the dev set{where}:", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in metrics.items()]
    else:
        lines.append("No dev metrics were stored with this checkpoint.")
    if summary and summary.get("phase_times"):
        times = ", ".join(f"{k} {v:.0f} s" for k, v in summary["phase_times"].items())
        lines += ["", f"Training time per phase: {times}."]
    lines += [
        "", "## Use it", "", "```python",
        "from stackft import load_exported, predict_texts", "",
        f'model, meta = load_exported("{out_name}")',
        f"predict_texts(model, {_EXAMPLES.get(task, '[...]')})",
        "```", "",
        f"or `stackft predict {out_name} --data FILE` (JSON lines with labels and probabilities; "
        f"`--data -` reads stdin).",
    ]
    hf = info.get("transformers")
    lines += ["", "## Plain transformers", ""]
    if hf:
        auto = "AutoModelForTokenClassification" if task == "ner" else "AutoModelForSequenceClassification"
        lines += [
            f"`{hf['folder']}/` is a standard `{hf['class']}` folder: {hf['mapping']}. Its logits equal the "
            f"stackft model's (max |difference| {hf['max_diff']:.2g} on the export check).", "",
            "```python",
            f"from transformers import AutoTokenizer, {auto}", "",
            f'tokenizer = AutoTokenizer.from_pretrained("{out_name}/{hf["folder"]}")',
            f'model = {auto}.from_pretrained("{out_name}/{hf["folder"]}")',
            "logits = model(**tokenizer([\"an example\"], truncation=True, return_tensors=\"pt\")).logits",
            "```",
        ]
        if task == "ner":
            lines += ["", "stackft reads each word's label at its first word-piece."]
    else:
        lines.append(f"No transformers folder: {info.get('transformers_reason') or 'not requested'}.")
    lines += [
        "", "## Training config", "",
        f"`{TRAIN_CONFIG_FILE}` (also a valid `stackft train --config {TRAIN_CONFIG_FILE}`):", "",
        "```json", json.dumps(cfg, indent=2, sort_keys=True), "```", "",
        "## Files", "",
        f"- `{WEIGHTS_FILE}`: all weights (encoder and head); `{ENCODER_DIR}/`: encoder config and tokenizer",
        f"- `{EXPORT_FILE}`: what `load_exported` reads (task, head, labels, max length, metrics, config)",
        f"- `{LABELS_FILE}`: the label map; `{TRAIN_CONFIG_FILE}`: the training settings",
    ]
    if hf:
        lines.append(f"- `{hf['folder']}/`: the plain transformers model")
    return "\n".join(lines) + "\n"
