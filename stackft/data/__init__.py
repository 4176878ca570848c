"""Data: readers (CoNLL, pair TSV, text CSV, HF datasets), labels, encoding, batching, splitting.

Flow: read_* -> LabelVocab.from_examples -> encode_* (EncodedDataset) -> make_loader (batches of
the docs/design.md contract). Input problems raise DataError with the file and line; the readers'
``on_error="skip"`` drops bad lines/rows/sentences instead, counts them on the returned
ExampleList (``skipped``, ``problems``) and warns once (DataWarning).
"""

from stackft.data.batching import LengthBucketSampler, collate, make_loader
from stackft.data.conll import TaggedSentence, iob1_to_iob2, read_conll
from stackft.data.encode import EncodedDataset, encode_pairs, encode_tagged, encode_texts
from stackft.data.errors import MAX_LINE_CHARS, ON_ERROR, DataError, DataWarning, ExampleList
from stackft.data.hf import load_hf_examples
from stackft.data.labels import LabelVocab
from stackft.data.pairs import PairExample, read_pairs_tsv
from stackft.data.split import split_examples
from stackft.data.textcls import TextExample, read_text_csv

__all__ = [
    "DataError",
    "DataWarning",
    "EncodedDataset",
    "ExampleList",
    "LabelVocab",
    "LengthBucketSampler",
    "MAX_LINE_CHARS",
    "ON_ERROR",
    "PairExample",
    "TaggedSentence",
    "TextExample",
    "collate",
    "encode_pairs",
    "encode_tagged",
    "encode_texts",
    "iob1_to_iob2",
    "load_hf_examples",
    "make_loader",
    "read_conll",
    "read_pairs_tsv",
    "read_text_csv",
    "split_examples",
]
