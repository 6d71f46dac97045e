"""Build src/delia/resources/data/wordsense/examples.jsonl.gz from WordNet 3.0 (Debian package `wordnet-base`).

    apt-get download wordnet-base && dpkg-deb -x wordnet-base_*.deb /tmp/wn
    python benchmarks/data/make_wordsense.py /tmp/wn/usr/share/wordnet/data.noun

Rows: a noun and its dictionary gloss -> {"category": animal | food | plant | artifact}, the noun's WordNet
lexicographer file (noun.animal, noun.food, noun.plant, noun.artifact). 50 per category, chosen with seed 0 among
synsets whose first lemma is one lowercase word of 3-12 letters, never a noun of two of the four categories (so
the label is the word's, not one sense's), with a definition of 20-160 characters (the gloss before its first
quoted example). Not part of the product: the shipped file is what it wrote.
"""

from __future__ import annotations

import gzip
import io
import json
import random
import re
import sys
from collections import defaultdict
from pathlib import Path

LEX = {"05": "animal", "06": "artifact", "13": "food", "20": "plant"}
PER_LABEL = 50
WORD = re.compile(r"^[a-z]{3,12}$")
OUT = Path(__file__).resolve().parents[2] / "src/delia/resources/data/wordsense/examples.jsonl.gz"


def synsets(path: Path):
    """(lex label, lemmas, definition) of every noun synset in the four lexicographer files."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("  ") or "|" not in line:
            continue  # the licence header
        fields, gloss = line.split("|", 1)
        parts = fields.split()
        label = LEX.get(parts[1])
        if label is None:
            continue
        n_words = int(parts[3], 16)
        lemmas = [parts[4 + 2 * i].lower() for i in range(n_words)]
        definition = gloss.strip().split('; "')[0].split(' "')[0].strip().rstrip(";").strip()
        yield label, lemmas, definition


def main(data_noun: str) -> None:
    rows = list(synsets(Path(data_noun)))
    categories = defaultdict(set)
    for label, lemmas, _ in rows:
        for lemma in lemmas:
            categories[lemma].add(label)
    pools = defaultdict(list)
    for label, lemmas, definition in rows:
        word = lemmas[0]
        if WORD.match(word) and len(categories[word]) == 1 and 20 <= len(definition) <= 160:
            pools[label].append((word, definition))
    rng = random.Random(0)
    used: set[str] = set()
    out = []
    for label in sorted(pools):
        cands = sorted(set(pools[label]))
        rng.shuffle(cands)
        picked = []
        for word, definition in cands:
            if word not in used:
                used.add(word)
                picked.append((word, definition))
            if len(picked) == PER_LABEL:
                break
        out += [{"id": f"ws-{label}-{i + 1}", "input": f"{w}: {d}", "output": json.dumps({"category": label})}
                for i, (w, d) in enumerate(picked)]
    rng.shuffle(out)
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9, mtime=0) as f:
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out).encode())
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_bytes(buf.getvalue())
    counts = {k: sum(json.loads(r["output"])["category"] == k for r in out) for k in sorted(pools)}
    print(f"{OUT}: {len(out)} rows {counts}")


if __name__ == "__main__":
    main(sys.argv[1])
