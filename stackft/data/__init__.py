"""Data: readers (CoNLL, pair TSV, text CSV, HF datasets), labels, encoding, batching, splitting.

Flow: read_* -> LabelVocab.from_examples -> encode_* (EncodedDataset) -> make_loader (batches of
the docs/design.md contract). Input problems raise DataError with the file and line.
"""

from .batching import LengthBucketSampler, collate, make_loader
from .conll import TaggedSentence, iob1_to_iob2, read_conll
from .encode import EncodedDataset, encode_pairs, encode_tagged, encode_texts
from .errors import DataError
from .hf import ExampleList, load_hf_examples
from .labels import LabelVocab
from .pairs import PairExample, read_pairs_tsv
from .split import split_examples
from .textcls import TextExample, read_text_csv

__all__ = [
    "DataError",
    "EncodedDataset",
    "ExampleList",
    "LabelVocab",
    "LengthBucketSampler",
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
