"""Pictures that teach (`makemore show`): the lectures' figures, from your own data and models.

Each picture has a function that computes its numbers (plain lists, what `--json` prints and the
tests check) and one that draws them (matplotlib, the optional `plot` extra, written atomically):
- `counts`: the bigram count matrix of a data file (boundary token `.` included, as the lecture
  draws it), the probabilities of its rows, and a bigram model's learned table, softmax(logits);
- `embeddings`: a model's token embedding table in 2-D (its own two dimensions, or a PCA);
- `attention`: per block and head, the causal attention weights of a transformer over a prompt,
  computed by the written-out attention (`Transformer.attention`), not the fast kernel;
- `training`: the diagnostics a run recorded with `--diagnostics N` (`makemore.diagnostics`).
Only character-level data is counted: a BPE vocabulary is too large for a grid.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import torch

import tokenizer as tokenizers
from makemore import data
from makemore import diagnostics as diagnosing
from makemore.checkpoint import Checkpoint
from makemore.errors import MakemoreError
from makemore.plot import EXTRA, matplotlib_pyplot
from makemore.sample import encode_prompt
from safeio.files import write_atomic

GRID_LABELS = 40  # a count grid larger than this many tokens a side is drawn without text in its cells


def pyplot():
    """matplotlib's pyplot, or the one-line error naming the extra."""
    plt = matplotlib_pyplot()
    if plt is None:
        raise MakemoreError(f"pictures need matplotlib, the optional plot extra: {EXTRA}")
    return plt


def save(fig, path: Path, dpi: int) -> tuple[int, int]:
    """Write `fig` as a PNG of exactly figsize * dpi pixels (no tight cropping), atomically; its size.
    The colours are reduced to a palette of 256 (Pillow, which matplotlib requires): a third of the bytes."""
    plt = pyplot()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=dpi)
    plt.close(fig)
    try:
        from PIL import Image

        small = io.BytesIO()
        Image.open(png).convert("RGB").quantize(256).save(small, "PNG", optimize=True)
        png = small
    except ImportError:
        pass
    write_atomic(path, png.getvalue())
    w, h = fig.get_size_inches()
    return round(w * dpi), round(h * dpi)


def label(tok, i: int) -> str:
    """A token as a picture shows it: `.` for the item boundary (as the lecture writes it), whitespace
    visible, the bytes of a split character as `<d0>`."""
    if tok.has_boundary and i == tok.eot_id:
        return "."
    text = tokenizers.readable(tok.decode_bytes([i]))
    return text.replace(" ", "␣").replace("\n", "↵").replace("\t", "→") or "∅"


# counts


def sequences(src: data.Source, tok, mode: str) -> list[list[int]]:
    """The data's token sequences: each item between boundaries (lines), or the whole text (text)."""
    try:
        if mode == "lines":
            return [[tok.eot_id, *tok.encode(s), tok.eot_id] for s in data.lines_of(src.text)[0]]
        return [tok.encode(src.text)]
    except tokenizers.TokenizerError as e:
        raise MakemoreError(f"{src.name}: {e}") from None


def count_matrix(seqs: list[list[int]], vocab_size: int) -> torch.Tensor:
    """N[a, b]: how often token b follows token a, (V, V) int64."""
    pairs = torch.cat([data.as_tensor(s[:-1]) * vocab_size + data.as_tensor(s[1:]) for s in seqs if len(s) > 1])
    return torch.bincount(pairs, minlength=vocab_size * vocab_size).view(vocab_size, vocab_size)


def row_probs(counts: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """Each row of `counts` (plus `smoothing`) divided by its sum; a row never seen stays zero."""
    n = counts.double() + smoothing
    return n / n.sum(1, keepdim=True).clamp(min=1e-300)


def nll(probs: torch.Tensor, counts: torch.Tensor) -> float:
    """Mean negative log-likelihood (nats per pair) of the counted pairs under `probs`."""
    seen = counts > 0
    return float(-(counts[seen] * probs[seen].log()).sum() / counts.sum())


def counts(path: str | Path | None, ckpt: Checkpoint | None = None, smoothing: float = 1.0) -> dict:
    """The bigram counts of the data at `path` (default: the model's training data, else the built-in
    names), their row probabilities (with `smoothing` added to every count, as the lecture does) and,
    with a bigram `ckpt`, its learned probabilities softmax(logits) over the same tokens."""
    if ckpt is not None and ckpt.model_type != "bigram":
        raise MakemoreError(f"{ckpt.path}: a {ckpt.model_type} model; `show counts` draws the table of a bigram model")
    if not smoothing >= 0 or not math.isfinite(smoothing):
        raise MakemoreError(f"`smoothing` {smoothing}: must be 0 or more")
    if ckpt is not None and path is None:
        src = data.source_of(ckpt.training.data, str(ckpt.path))
    else:
        src = data.read_source(path)
    mode = ckpt.training.kind.kind if ckpt is not None else data.choose("auto", src.head, src.name)[0].kind  # as `train` decides
    if ckpt is not None:
        tok = ckpt.tokenizer
    else:
        tok = tokenizers.CharTokenizer.from_items(data.lines_of(src.text)[0] if mode == "lines" else [src.text])
    if tok.kind != "char":
        raise MakemoreError(f"{ckpt.path}: a {tok.kind} tokenizer of {tok.vocab_size:,} tokens; `show counts` draws character grids")
    n = count_matrix(sequences(src, tok, mode), tok.vocab_size)
    p = row_probs(n, smoothing)
    result = {"data": src.name, "mode": mode, "tokens": [label(tok, i) for i in range(tok.vocab_size)],
              "pairs": int(n.sum()), "smoothing": smoothing, "counts": n.tolist(), "probs": p.tolist(), "nll": nll(p, n)}
    if ckpt is not None:
        with torch.no_grad():
            learned = torch.softmax(ckpt.model.logits.double().cpu(), dim=1)
        result["model"] = {"checkpoint": str(ckpt.path), "probs": learned.tolist(), "nll": nll(learned, n)}
    return result


def draw_grid(ax, matrix: list[list[float]], tokens: list[str], fmt, title: str) -> None:
    """The lecture's grid: a blue image, each cell labelled with its pair and its value."""
    ax.imshow(matrix, cmap="Blues")
    V = len(tokens)
    if V <= GRID_LABELS:
        small = 9 if V <= 28 else 5
        for i in range(V):
            for j in range(V):
                ax.text(j, i, tokens[i] + tokens[j], ha="center", va="bottom", color="gray", fontsize=small)
                ax.text(j, i, fmt(matrix[i][j]), ha="center", va="top", color="gray", fontsize=small)
    ax.set_title(title, fontsize=18)
    ax.axis("off")


def draw_counts(result: dict, path: Path, dpi: int = 100) -> tuple[int, int]:
    """The counts, their rows as probabilities and (with a model) its learned table, side by side."""
    plt = pyplot()
    panels = 3 if "model" in result else 2
    fig, axes = plt.subplots(1, panels, figsize=(14 * panels, 14), squeeze=False)
    tokens, ax = result["tokens"], axes[0]
    draw_grid(ax[0], result["counts"], tokens, str, f"{result['data']}: row token, then column token ({result['pairs']:,} pairs)")
    draw_grid(ax[1], result["probs"], tokens, lambda v: f"{v:.2f}",
              f"each row / its sum (smoothing {result['smoothing']:g}): {result['nll']:.4f} nats/pair")
    if panels == 3:
        m = result["model"]
        draw_grid(ax[2], m["probs"], tokens, lambda v: f"{v:.2f}", f"the bigram model's softmax(logits): {m['nll']:.4f} nats/pair")
    fig.tight_layout(pad=2)
    return save(fig, path, dpi)


# embeddings


def embedding_table(ckpt: Checkpoint) -> torch.Tensor:
    """The model's token embedding table (V, C): its first embedding with a row for every token."""
    V = ckpt.tokenizer.vocab_size
    for module in ckpt.model.modules():
        if isinstance(module, torch.nn.Embedding) and module.num_embeddings in (V, V + 1):  # V + 1: the MLP's padding row
            return module.weight.detach().double().cpu()[:V]
    raise MakemoreError(f"{ckpt.path}: a {ckpt.model_type} model has no token embedding table to show")


def pca(x: torch.Tensor, k: int = 2) -> tuple[torch.Tensor, list[float]]:
    """The rows of `x` (N, C) on its first `k` principal axes, and the share of the variance each
    explains. Each axis's sign is fixed so that its largest loading is positive."""
    centred = x - x.mean(0)
    _, s, vt = torch.linalg.svd(centred, full_matrices=False)
    axes = vt[:k]
    axes = axes * axes.gather(1, axes.abs().argmax(1, keepdim=True)).sign()
    variance = s**2
    return centred @ axes.T, (variance[:k] / variance.sum()).tolist()


def embeddings(ckpt: Checkpoint) -> dict:
    """The embedding table in 2-D: its own two dimensions when it has two (one: a line), else a PCA."""
    table = embedding_table(ckpt)
    tokens = [label(ckpt.tokenizer, i) for i in range(table.shape[0])]
    if table.shape[1] <= 2:
        xy = torch.cat([table, table.new_zeros(table.shape[0], 2 - table.shape[1])], 1)
        return {"checkpoint": str(ckpt.path), "dims": table.shape[1], "method": "dims", "explained": None,
                "tokens": tokens, "points": xy.tolist()}
    xy, explained = pca(table)
    return {"checkpoint": str(ckpt.path), "dims": table.shape[1], "method": "pca", "explained": explained,
            "tokens": tokens, "points": xy.tolist()}


def draw_embeddings(result: dict, path: Path, dpi: int = 100) -> tuple[int, int]:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 8))
    x, y = zip(*result["points"])
    ax.scatter(x, y, s=200 if len(x) <= 100 else 20)
    if len(x) <= 500:
        for (px, py), t in zip(result["points"], result["tokens"]):
            ax.text(px, py, t, ha="center", va="center", color="white" if len(x) <= 100 else "black", fontsize=9)
    if result["method"] == "pca":
        a, b = result["explained"]
        ax.set_xlabel(f"first principal component ({a:.0%} of the variance)")
        ax.set_ylabel(f"second principal component ({b:.0%})")
        what = f"PCA of {result['dims']} dimensions"
    else:
        ax.set_xlabel("dimension 0")
        ax.set_ylabel("dimension 1")
        what = f"its {result['dims']} dimension{'s' if result['dims'] > 1 else ''}"
    ax.set_title(f"token embeddings ({what})")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save(fig, path, dpi)


# attention


def attention(ckpt: Checkpoint, prompt: str) -> dict:
    """Per block and head, the attention weights (T x T, causal) of a transformer over `prompt`'s
    tokens (a lines-mode model reads an item from its boundary token on)."""
    model, tok = ckpt.model, ckpt.tokenizer
    if not hasattr(model, "attention"):
        raise MakemoreError(f"{ckpt.path}: a {ckpt.model_type} model has no attention; `show attention` needs a transformer")
    ids = encode_prompt(tok, prompt, "`prompt`")
    if ckpt.training.kind.kind == "lines":  # the run's own kind (an imported model's is text)
        ids = [tok.eot_id, *ids]
    if not ids:
        raise MakemoreError("`prompt`: empty; give some text to attend over")
    if len(ids) > model.config.block_size:
        raise MakemoreError(f"`prompt` is {len(ids)} tokens; the model sees at most {model.config.block_size}")
    model.eval()
    _, weights = model.attention(torch.tensor([ids]))
    return {"checkpoint": str(ckpt.path), "prompt": prompt, "tokens": [label(tok, i) for i in ids],
            "weights": [w[0].double().tolist() for w in weights]}  # [layer][head][query][key]


def draw_attention(result: dict, path: Path, dpi: int = 100) -> tuple[int, int]:
    plt = pyplot()
    layers, heads = len(result["weights"]), len(result["weights"][0])
    tokens = result["tokens"]
    side = 3.0 if len(tokens) <= 24 else 4.5
    fig, axes = plt.subplots(layers, heads, figsize=(side * heads, side * layers), squeeze=False)
    for l, layer in enumerate(result["weights"]):
        for h, w in enumerate(layer):
            ax = axes[l][h]
            ax.imshow(w, cmap="viridis", vmin=0, vmax=1)
            ax.set_title(f"block {l} head {h}", fontsize=9)
            ticks = range(len(tokens)) if len(tokens) <= 40 else []
            ax.set_xticks(list(ticks), [tokens[i] for i in ticks], fontsize=9 if len(tokens) <= 16 else 6)
            ax.set_yticks(list(ticks), [tokens[i] for i in ticks], fontsize=9 if len(tokens) <= 16 else 6)
    fig.suptitle("attention: each row (a query token) over the keys it sees, up to itself")
    fig.tight_layout()
    return save(fig, path, dpi)


# training diagnostics


def training(run: Path) -> dict:
    """The diagnostics a run recorded: the last record whole (histograms included), and per weight
    matrix its update-to-data ratio at every record, per activation its saturated share."""
    records = diagnosing.read(run)
    last = records[-1]
    steps = [r["step"] for r in records]
    ratios = {w["name"]: [next((v.get("update_ratio") for v in r["weights"] if v["name"] == w["name"]), None) for r in records]
              for w in last["weights"]}
    saturated = {a["layer"]: [next((v.get("saturated") for v in r["activations"] if v["layer"] == a["layer"]), None) for r in records]
                 for a in last["activations"]}
    return {"run": str(run), "records": len(records), "steps": steps, "last": last, "update_ratios": ratios, "saturated": saturated}


def draw_histograms(ax, rows: list[dict], key: str, title: str, legend) -> None:
    """One line per layer: the histogram `rows[i][key]` as a density curve (the lecture's panels)."""
    for row in rows:
        h = row.get(key)
        if not h:
            continue
        width = (h["hi"] - h["lo"]) / len(h["counts"])
        centres = [h["lo"] + width * (k + 0.5) for k in range(len(h["counts"]))]
        total = sum(h["counts"]) or 1
        ax.plot(centres, [c / total / width for c in h["counts"]], label=legend(row))
    ax.set_title(title, fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def draw_training(result: dict, path: Path, dpi: int = 100) -> tuple[int, int]:
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(14, 10))
    last = result["last"]
    acts = last["activations"]

    def act_legend(a):
        sat = f", saturated {a['saturated']:.1%}" if a.get("saturated") is not None else ""
        return f"{a['layer']} ({a['kind']}): mean {a['mean']:+.2f}, std {a['std']:.2f}{sat}"

    draw_histograms(axes[0][0], acts, "hist", f"activations at step {last['step']}", act_legend)
    draw_histograms(axes[0][1], acts, "grad_hist", f"gradients of the activations at step {last['step']}",
                    lambda a: f"{a['layer']}: mean {a.get('grad_mean', 0):+.1e}, std {a.get('grad_std', 0):.1e}")
    draw_histograms(axes[1][0], last["weights"], "grad_hist", f"gradients of the weight matrices at step {last['step']}",
                    lambda w: f"{w['name']} {tuple(w['shape'])}: std {w.get('grad_std', 0):.1e}, grad:data {w.get('grad_std', 0) / (w['std'] or 1):.1e}")
    ax = axes[1][1]
    nan = float("nan")
    for name, values in result["update_ratios"].items():
        ax.plot(result["steps"], [nan if v is None else v for v in values], label=name)
    ax.axhline(-3, color="black", linestyle="--", linewidth=1)  # lecture 4's rough guide: updates ~1e-3 of the data
    ax.set_xlabel("step")
    ax.set_ylabel("log10(std(update) / std(weight))")
    ax.set_title("update-to-data ratio per weight matrix (dashed: 1e-3)", fontsize=10)
    if len(result["update_ratios"]) <= 12:
        ax.legend(fontsize=7)
    if not acts:
        for a in axes[0]:
            a.text(0.5, 0.5, "no activation modules (tanh, GELU, ReLU) in this model", ha="center", transform=a.transAxes)
    fig.suptitle(f"{result['run']}: training diagnostics ({result['records']} records)")
    fig.tight_layout()
    return save(fig, path, dpi)
