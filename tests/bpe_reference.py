"""The small, obviously-correct BPE that the fast code is checked against: plain loops over the
whole text, as in minbpe, with the same documented tie-break (most frequent pair; on a tie, the
smallest pair of ids)."""

from tokenizer.bpe import get_stats, merge
from tokenizer.patterns import compile_split


def reference_train(text: str, n_merges: int, pattern: str | None, min_frequency: int = 1) -> list[tuple[int, int]]:
    ids_list = [list(chunk.encode("utf-8")) for chunk in compile_split(pattern)(text)]
    merges = []
    for i in range(n_merges):
        stats = {}
        for ids in ids_list:
            get_stats(ids, stats)
        if not stats:
            break
        pair = max(stats, key=lambda p: (stats[p], -p[0], -p[1]))
        if stats[pair] < min_frequency:
            break
        merges.append(pair)
        ids_list = [merge(ids, pair, 256 + i) for ids in ids_list]
    return merges


def reference_encode(text: str, merges: list[tuple[int, int]], pattern: str | None) -> list[int]:
    ranks = {pair: 256 + i for i, pair in enumerate(merges)}
    out = []
    for chunk in compile_split(pattern)(text):
        ids = list(chunk.encode("utf-8"))
        while len(ids) >= 2:
            stats = get_stats(ids)
            pair = min(stats, key=lambda p: ranks.get(p, float("inf")))
            if pair not in ranks:
                break
            ids = merge(ids, pair, ranks[pair])
        out.extend(ids)
    return out
