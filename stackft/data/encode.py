"""Tokenise examples into an EncodedDataset: sub-word alignment for tagging, pairs, truncation count.

Sequence order (what the feature cache stores): single-sequence kinds keep sequence i = example i;
"pairs-siamese" stores sequence 2i = side a and 2i+1 = side b of example i.
"""

from __future__ import annotations

import warnings

from torch.utils.data import Dataset

from stackft.data.labels import LabelVocab

KINDS = ("tagging", "classification", "pairs-joint", "pairs-siamese")
IGNORE = -100  # label id that CrossEntropyLoss(ignore_index=-100) skips


class EncodedDataset(Dataset):
    """Tokenised examples.

    Attributes:
        items: list of dicts of python ints/lists (keys depend on ``kind``, see the encode_* functions).
        lengths: token count per item (siamese: the longer of the two sides), for length bucketing.
        kind: "tagging" | "classification" | "pairs-joint" | "pairs-siamese".
        n_truncated: how many sequences were cut to ``max_length``.
        examples: the source examples, in item order (kept for word-level evaluation).
        vocab: the LabelVocab used; max_length: the cut-off used.
    """

    def __init__(self, items, lengths, kind, examples, *, n_truncated=0, vocab=None, max_length=None):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if not len(items) == len(lengths) == len(examples):
            raise ValueError("items, lengths and examples must have the same length")
        self.items = items
        self.lengths = lengths
        self.kind = kind
        self.examples = examples
        self.n_truncated = n_truncated
        self.vocab = vocab
        self.max_length = max_length

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        """The item's dict plus ``"index": i``."""
        return {**self.items[i], "index": i}

    def sequences(self) -> list[list[int]]:
        """Input-id lists in cache order (siamese: 2i = side a, 2i+1 = side b of item i)."""
        if self.kind == "pairs-siamese":
            out = []
            for item in self.items:
                out.append(item["a_input_ids"])
                out.append(item["b_input_ids"])
            return out
        return [item["input_ids"] for item in self.items]

    def segments(self) -> list[list[int]] | None:
        """Token-type id lists in cache order where they matter (joint pairs), else None."""
        if self.kind == "pairs-joint":
            return [item["token_type_ids"] for item in self.items]
        return None


def _check_max_length(tokenizer, max_length: int) -> None:
    minimum = tokenizer.num_special_tokens_to_add(pair=False) + 1
    if max_length < minimum:
        raise ValueError(f"max_length={max_length} leaves no room for tokens (need at least {minimum})")


def _warn_truncated(n: int, m: int, max_length: int) -> None:
    if n:
        warnings.warn(f"{n} of {m} sequences truncated to max_length={max_length}", stacklevel=3)


def _placeholder(tokenizer) -> str:
    return tokenizer.unk_token or tokenizer.pad_token or "_"


def _tokenize(tokenizer, first, second=None, *, max_length, split_words=False):
    """Encode a batch, counting truncation: untruncated first, then again with truncation where needed.

    With ``split_words`` (``first`` is a list of word lists) a word that yields no sub-token is
    replaced by the unknown token (one token) so that every word keeps a position.

    Returns (per-example dicts with input_ids and token_type_ids, per-example word_ids lists or
    None, per-example bool "was truncated").
    """
    kwargs = {"is_split_into_words": True} if split_words else {}
    full = tokenizer(first, second, truncation=False, verbose=False, **kwargs)
    n = len(full["input_ids"])
    full_lengths = [len(ids) for ids in full["input_ids"]]
    redo = set()
    if split_words:
        first = [list(words) for words in first]
        for i in range(n):
            present = {w for w in full.word_ids(i) if w is not None}
            missing = [w for w in range(len(first[i])) if w not in present]
            if missing:
                for w in missing:
                    first[i][w] = _placeholder(tokenizer)
                full_lengths[i] += len(missing)
                redo.add(i)
    too_long = [length > max_length for length in full_lengths]
    redo = sorted(redo | {i for i in range(n) if too_long[i]})
    cut = None
    if redo:
        cut = tokenizer(
            [first[i] for i in redo],
            None if second is None else [second[i] for i in redo],
            truncation=True, max_length=max_length, verbose=False, **kwargs,
        )
    where = {i: j for j, i in enumerate(redo)}
    encodings, word_ids = [], []
    for i in range(n):
        source, k = (cut, where[i]) if i in where else (full, i)
        ids = source["input_ids"][k]
        types = source["token_type_ids"][k] if "token_type_ids" in source else [0] * len(ids)
        encodings.append({"input_ids": list(ids), "token_type_ids": list(types)})
        word_ids.append(source.word_ids(k) if split_words else None)
    return encodings, word_ids, too_long


def encode_tagged(sentences, tokenizer, vocab: LabelVocab, max_length: int = 128, *, path=None) -> EncodedDataset:
    """Encode TaggedSentences for token classification (label on each word's first sub-token).

    Item keys:
        input_ids, token_type_ids: list[int] of length T (with [CLS]/[SEP]).
        labels: list[int] of length T: the tag id on each word's first sub-token, -100 on later
            sub-tokens and special tokens.
        word_starts: list[int], position of the first sub-token of each word that survived
            truncation (words 0..len(word_starts)-1, in order).
        n_words: int, the sentence's word count (len(tokens)). Words len(word_starts)..n_words-1
            were truncated away; predict "O" for them so predictions match the gold tags.

    A word that tokenises to nothing (e.g. a lone control character) is encoded as the tokenizer's
    unknown token, so every word keeps a position. Unknown tags raise DataError(path, line).
    """
    _check_max_length(tokenizer, max_length)
    label_ids = [[vocab.encode(tag, path=path, line=s.line) for tag in s.tags] for s in sentences]
    words = [list(s.tokens) for s in sentences]
    items, lengths = [], []
    encodings, word_ids, too_long = (
        _tokenize(tokenizer, words, max_length=max_length, split_words=True) if words else ([], [], [])
    )
    for enc, ids_of_words, labels_of_words in zip(encodings, word_ids, label_ids):
        labels = [IGNORE] * len(enc["input_ids"])
        starts = []
        previous = None
        for position, w in enumerate(ids_of_words):
            if w is not None and w != previous:
                if w != len(starts):  # cannot happen after the placeholder pass; guards alignment
                    raise AssertionError(f"word {w} out of order at position {position}")
                labels[position] = labels_of_words[w]
                starts.append(position)
            previous = w
        items.append({**enc, "labels": labels, "word_starts": starts, "n_words": len(labels_of_words)})
        lengths.append(len(enc["input_ids"]))
    n_truncated = sum(too_long)
    _warn_truncated(n_truncated, len(items), max_length)
    return EncodedDataset(items, lengths, "tagging", list(sentences), n_truncated=n_truncated,
                          vocab=vocab, max_length=max_length)


def encode_texts(examples, tokenizer, vocab: LabelVocab, max_length: int = 128, *, path=None) -> EncodedDataset:
    """Encode TextExamples for sequence classification.

    Item keys: input_ids, token_type_ids (list[int], length T), labels (int).
    """
    _check_max_length(tokenizer, max_length)
    labels = [vocab.encode(e.label, path=path, line=e.line) for e in examples]
    texts = [e.text for e in examples]
    encodings, _, too_long = _tokenize(tokenizer, texts, max_length=max_length) if texts else ([], [], [])
    items = [{**enc, "labels": label} for enc, label in zip(encodings, labels)]
    lengths = [len(enc["input_ids"]) for enc in encodings]
    n_truncated = sum(too_long)
    _warn_truncated(n_truncated, len(items), max_length)
    return EncodedDataset(items, lengths, "classification", list(examples), n_truncated=n_truncated,
                          vocab=vocab, max_length=max_length)


def encode_pairs(examples, tokenizer, vocab: LabelVocab, max_length: int = 128, mode: str = "joint", *,
                 path=None) -> EncodedDataset:
    """Encode PairExamples, jointly (one ``[CLS] a [SEP] b [SEP]`` sequence) or siamese (two sequences).

    joint item keys: input_ids, token_type_ids (0 for a, 1 for b), labels (int); kind "pairs-joint".
        Truncation cuts the longer side first; a truncated pair counts as one truncated sequence.
    siamese item keys: a_input_ids, b_input_ids (each ``[CLS] text [SEP]``, cut to max_length
        separately), labels (int); kind "pairs-siamese". Each side counts as one sequence.
    """
    if mode not in ("joint", "siamese"):
        raise ValueError(f"mode must be 'joint' or 'siamese', got {mode!r}")
    _check_max_length(tokenizer, max_length)
    if mode == "joint" and max_length < tokenizer.num_special_tokens_to_add(pair=True) + 2:
        raise ValueError(f"max_length={max_length} is too short for a joint pair encoding")
    labels = [vocab.encode(e.label, path=path, line=e.line) for e in examples]
    a = [e.text_a for e in examples]
    b = [e.text_b for e in examples]
    items, lengths = [], []
    if not examples:
        too_long = []
    elif mode == "joint":
        encodings, _, too_long = _tokenize(tokenizer, a, b, max_length=max_length)
        for enc, label in zip(encodings, labels):
            items.append({**enc, "labels": label})
            lengths.append(len(enc["input_ids"]))
    else:
        enc_a, _, long_a = _tokenize(tokenizer, a, max_length=max_length)
        enc_b, _, long_b = _tokenize(tokenizer, b, max_length=max_length)
        too_long = long_a + long_b
        for side_a, side_b, label in zip(enc_a, enc_b, labels):
            items.append({"a_input_ids": side_a["input_ids"], "b_input_ids": side_b["input_ids"], "labels": label})
            lengths.append(max(len(side_a["input_ids"]), len(side_b["input_ids"])))
    n_truncated = sum(too_long)
    _warn_truncated(n_truncated, len(too_long), max_length)
    return EncodedDataset(items, lengths, f"pairs-{mode}", list(examples), n_truncated=n_truncated,
                          vocab=vocab, max_length=max_length)
