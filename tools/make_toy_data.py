"""Write the synthetic toy data sets bundled with stackft: ``toy_pairs.tsv`` and ``toy_classification.csv``.

They exist so that the README's pairs and classification commands run on a fresh clone, offline.
Every sentence is made up here from the templates below (no third-party text): the scores they
give mean nothing about real data. Deterministic: ``python tools/make_toy_data.py [FOLDER]`` rewrites the
bundled files in ``stackft/demo_data/`` (the default FOLDER) byte for byte (``tests/test_readme.py`` checks it).

- ``toy_pairs.tsv``: 600 question pairs in the QQP layout ``label<TAB>q1<TAB>q2<TAB>id`` (no
  header, tokens separated by spaces as in the BiMPM split of QQP). Label 1 (300 pairs): the same
  intent about the same topic, asked with two different templates. Label 0: the same topic with
  another intent (150), or the same intent about another topic (150).
- ``toy_classification.csv``: 600 rows ``text,label`` (no header), labels ``science`` and ``society``
  (300 each): one sentence from class-specific subjects and objects with shared verbs and openers.
"""

from __future__ import annotations

import csv
import io
import random
import sys
from pathlib import Path

INTENTS = {
    "learn": ["How do I learn {t} ?", "What is the best way to learn {t} ?",
              "How can a beginner get started with {t} ?", "What should I do to get good at {t} ?"],
    "cost": ["How much does {t} cost ?", "What is the price of {t} ?", "Is {t} expensive ?",
             "How expensive is {t} for a beginner ?"],
    "history": ["What is the history of {t} ?", "Where did {t} come from ?", "How did {t} begin ?",
                "When did people start with {t} ?"],
    "benefit": ["Why is {t} good for you ?", "What are the benefits of {t} ?", "Is {t} worth the time ?",
                "What do people gain from {t} ?"],
    "risk": ["Is {t} dangerous ?", "What are the risks of {t} ?", "Can {t} be harmful ?",
             "What can go wrong with {t} ?"],
}
TOPICS = ["chess", "yoga", "python programming", "the guitar", "photography", "swimming", "coffee", "solar panels",
          "electric cars", "rock climbing", "meditation", "baking bread", "public speaking", "knitting",
          "scuba diving", "machine learning", "woodworking", "gardening", "sailing", "the piano", "marathon running",
          "oil painting", "skiing", "tennis", "3d printing", "beekeeping", "calligraphy", "cycling", "camping",
          "bird watching"]

SUBJECTS = {
    "science": ["the experiment", "a chemist", "the telescope", "the new vaccine", "a physicist", "the equation",
                "the lab team", "a biologist", "the satellite", "the microscope", "the algorithm", "a geologist"],
    "society": ["the city council", "a local festival", "the museum", "the voters", "a community group",
                "the school board", "the old library", "a church choir", "the neighbours", "the mayor",
                "a charity", "the town square"],
}
OBJECTS = {
    "science": ["the orbit of the moon", "a rare enzyme", "prime numbers", "the speed of light", "volcanic rock",
                "a new protein", "the human genome", "dark matter", "the ocean currents", "black holes"],
    "society": ["the holiday parade", "a new tradition", "the local election", "the wedding customs",
                "the harvest fair", "public housing", "the national anthem", "the history of the town",
                "family dinners", "the museum opening"],
}
VERBS = ["described", "changed", "explained", "questioned", "studied", "celebrated", "discussed", "supported"]
OPENERS = ["Last year", "Yesterday", "In the report", "Everyone agrees that", "It seems that", "Once again", ""]


def toy_pairs(n: int = 600, seed: int = 0) -> list[tuple[int, str, str, int]]:
    rng = random.Random(seed)
    intents = list(INTENTS)
    rows = []
    for i in range(n):
        intent, topic = rng.choice(intents), rng.choice(TOPICS)
        first = rng.choice(INTENTS[intent])
        if i % 2 == 0:  # a duplicate: the same question, asked another way
            label, intent2, topic2 = 1, intent, topic
            second = rng.choice([t for t in INTENTS[intent] if t != first])
        elif i % 4 == 1:  # the same topic, another question
            label, topic2 = 0, topic
            intent2 = rng.choice([x for x in intents if x != intent])
            second = rng.choice(INTENTS[intent2])
        else:  # the same question about another topic
            label, intent2 = 0, intent
            topic2 = rng.choice([t for t in TOPICS if t != topic])
            second = rng.choice(INTENTS[intent])
        rows.append((label, first.format(t=topic), second.format(t=topic2)))
    rng.shuffle(rows)
    return [(label, a[0].upper() + a[1:], b[0].upper() + b[1:], 1000 + i) for i, (label, a, b) in enumerate(rows)]


def toy_texts(n: int = 600, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = ("science", "society")[i % 2]
        opener = rng.choice(OPENERS)
        words = [opener, rng.choice(SUBJECTS[label]), rng.choice(VERBS), rng.choice(OBJECTS[label])]
        text = " ".join(w for w in words if w) + "."
        rows.append((text[0].upper() + text[1:], label))
    rng.shuffle(rows)
    return rows


def pairs_text() -> str:
    return "".join(f"{label}\t{a}\t{b}\t{i}\n" for label, a, b, i in toy_pairs())


def texts_text() -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(toy_texts())
    return out.getvalue()


def main(folder: str | Path = Path(__file__).resolve().parent.parent / "stackft" / "demo_data") -> None:
    folder = Path(folder)
    (folder / "toy_pairs.tsv").write_text(pairs_text())
    (folder / "toy_classification.csv").write_text(texts_text())


if __name__ == "__main__":
    main(*sys.argv[1:])
