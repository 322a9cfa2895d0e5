"""Generated instructions with exact answers, for pairs mode: reverse a word, uppercase it, the next
letter. Writes a JSONL of {"prompt", "response"} records for training and one of held-out words.

    python bench/instructions.py qa.jsonl --held-out qa-test.jsonl
    makemore train qa.jsonl --max-steps 1000 --lr 3e-3 --batch-size 32 --out checkpoints/qa-transformer
    python bench/instructions.py qa-test.jsonl --score checkpoints/qa-transformer

The held-out records use words none of the training records use, so getting them right means
the model learned the rule, not the words. `--score` answers each held-out prompt greedily and
prints the share answered exactly.
"""

from __future__ import annotations

import argparse
import json
import random
import string
from pathlib import Path

TASKS = {
    "Reverse": lambda w: w[::-1],
    "Uppercase": str.upper,
}


SYLLABLES = ["ba", "ce", "di", "fo", "gu", "ka", "le", "mi", "no", "pu", "ra", "se", "ti", "vo", "zu", "an", "er", "ol"]


def words(n: int, seed: int, letters: bool = False) -> list[str]:
    """`n` distinct made-up words: 2 or 3 syllables of SYLLABLES, or with `letters` 3 to 6 random
    letters (harder: no part of a word's answer can be recalled from another word's)."""
    rng, found, seen = random.Random(seed), [], set()
    while len(found) < n:
        if letters:
            w = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 6)))
        else:
            w = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3)))
        if w not in seen:
            seen.add(w)
            found.append(w)
    return found


def records(ws: list[str], letters: str) -> list[dict]:
    """Every task on every word, and "Next letter" on each of `letters`."""
    rows = [{"prompt": f"{task}: {w}", "response": rule(w)} for w in ws for task, rule in TASKS.items()]
    rows += [{"prompt": f"Next letter: {c}", "response": chr(ord(c) + 1)} for c in letters]
    return rows


def make(n_train: int = 500, n_test: int = 30, seed: int = 0, letters: bool = False) -> tuple[list[dict], list[dict]]:
    """Training records and held-out records: the word tasks on words the training never shows
    (the next letter is trained on all 25 letters: a letter never asked about has no rule to learn)."""
    ws = words(n_train + n_test, seed, letters)
    train = records(ws[:n_train], string.ascii_lowercase[:-1])  # z has no next letter
    test = records(ws[n_train:], "")
    random.Random(seed + 1).shuffle(train)
    return train, test


def write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def accuracy(model, rows: list[dict]) -> float:
    """Share of `rows` whose prompt `model` (a `makemore.load` model) answers exactly, greedily."""
    answers = [model.sample(1, prompt=r["prompt"], temperature=0)[0] for r in rows]
    return sum(a == r["response"] for a, r in zip(answers, rows)) / len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="the training JSONL to write (or, with --score, the held-out JSONL to read)")
    parser.add_argument("--held-out", type=Path, help="also write the held-out records here")
    parser.add_argument("--words", type=int, default=500, help="training words (each gives two records)")
    parser.add_argument("--letters", action="store_true", help="words of random letters instead of syllables (harder)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--score", metavar="RUN", help="answer the held-out records of OUT with this run and print the accuracy")
    args = parser.parse_args()
    if args.score:
        import makemore

        rows = [json.loads(line) for line in args.out.read_text(encoding="utf-8").splitlines() if line.strip()]
        print(f"{accuracy(makemore.load(args.score), rows):.1%} of {len(rows)} held-out prompts answered exactly")
        return
    train, test = make(args.words, seed=args.seed, letters=args.letters)
    write(args.out, train)
    if args.held_out:
        write(args.held_out, test)
    print(f"wrote {len(train)} records to {args.out}" + (f" and {len(test)} to {args.held_out}" if args.held_out else ""))


if __name__ == "__main__":
    main()
