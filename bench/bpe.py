"""BPE benchmark: this project against Hugging Face `tokenizers` and tiktoken, side by side.

For each corpus (tinyshakespeare from ../shared/data, and a mixed corpus of prose and code
built from text files on this machine), it measures:
  - training time to --vocab (GPT-4 split, min frequency 2, <|endoftext|> special) for this
    project and for Hugging Face's BPE trainer, single-threaded and with its default threads;
  - encoding throughput in MB/s, single thread, for this project, tiktoken loaded with our
    exported ranks, and Hugging Face loaded with our exported tokenizer.json (all three must
    give identical ids; the table says so);
  - peak memory (max RSS) of each run, each in its own process.

    python bench/bpe.py [--vocab 4096] [--mixed-mb 12] [--big-mb 100] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
EOT = "<|endoftext|>"


def build_mixed(path: Path, megabytes: float) -> Path:
    """Prose (Shakespeare, licences, READMEs) and code (Python's standard library, then the
    installed packages), file by file in a fixed order, until `megabytes` is reached."""
    limit = int(megabytes * 1e6)
    sources = [SHAKESPEARE] if SHAKESPEARE.exists() else []
    for folder, pattern in (("/usr/share/common-licenses", "*"), ("/usr/share/doc", "README*"),
                            (sysconfig.get_paths()["stdlib"], "*.py"), (sysconfig.get_paths()["purelib"], "*.py")):
        sources += sorted(p for p in Path(folder).rglob(pattern) if p.is_file())
    size = 0
    with open(path, "w", encoding="utf-8") as out:
        for p in sources:
            try:
                text = p.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            out.write(text + "\n")
            size += len(text.encode("utf-8")) + 1
            if size >= limit:
                break
    return path


# --- workers: each runs in its own process, so that its peak memory is its own ---

def work_train(ours: bool, corpus: str, vocab: int, out: str) -> dict:
    t = time.perf_counter()
    if ours:
        import tokenizer

        tok = tokenizer.train(corpus, vocab, "gpt4", [EOT], min_frequency=2)
        seconds = time.perf_counter() - t
        tok.save(out)
    else:
        from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

        from tokenizer.patterns import GPT4

        hf = Tokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(GPT4), behavior="isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        trainer = trainers.BpeTrainer(vocab_size=vocab, min_frequency=2, special_tokens=[EOT], show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        hf.train([corpus], trainer)
        seconds = time.perf_counter() - t
    return {"seconds": seconds}


def work_encode(lib: str, corpus: str, tok_path: str, export_dir: str) -> dict:
    import tokenizer
    from tokenizer.export import export

    text = Path(corpus).read_text(encoding="utf-8")
    ours = tokenizer.load(tok_path)
    if lib == "ours":
        fresh = [tokenizer.load(tok_path) for _ in range(3)]  # one per run, so each run's chunk cache starts empty

        def encode(s):
            return fresh.pop().encode_ordinary(s)
    elif lib == "tiktoken":
        import tiktoken
        from tiktoken.load import load_tiktoken_bpe

        ranks = export(ours, "tiktoken", Path(export_dir) / f"{Path(tok_path).stem}.tiktoken")
        enc = tiktoken.Encoding("ours", pat_str=ours.regex, mergeable_ranks=load_tiktoken_bpe(str(ranks)), special_tokens=ours.special)
        encode = enc.encode_ordinary
    else:
        from tokenizers import Tokenizer

        hf = Tokenizer.from_file(str(export(ours, "huggingface", Path(export_dir) / f"{Path(tok_path).stem}.hf.json")))
        def encode(s):
            return hf.encode(s).ids
    times, ids = [], None
    for _ in range(3):
        t = time.perf_counter()
        ids = encode(text)
        times.append(time.perf_counter() - t)
    mb = len(text.encode("utf-8")) / 1e6
    return {"mb_per_s": mb / statistics.median(times), "tokens": len(ids),
            "ids_sha": hashlib.sha256(json.dumps(ids).encode()).hexdigest()[:16]}


def run_worker(kind: str, args: dict, threads: int | None = None) -> dict:
    """Run a worker in a child process; its result includes its own peak memory (MB)."""
    env = dict(os.environ, TIKTOKEN_CACHE_DIR="")  # tiktoken caches rank files by path: never reuse a stale one
    if threads:
        env["RAYON_NUM_THREADS"] = str(threads)  # Hugging Face's thread pool
    cmd = [sys.executable, __file__, "--worker", kind, json.dumps(args)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, cwd=ROOT)
    out, _ = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"worker {kind} {args} failed")
    result = json.loads(out)
    result["peak_mb"] = result.pop("_peak_kb") / 1024
    return result


def worker_main(kind: str, args: dict) -> None:
    import resource

    result = work_train(**args) if kind == "train" else work_encode(**args)
    result["_peak_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(result))


def bench_corpus(name: str, corpus: Path, vocab: int, tmp: Path, skip_hf_default: bool = False) -> dict:
    tok_path = tmp / f"{corpus.stem}.json"
    row = {"corpus": name, "mb": corpus.stat().st_size / 1e6}
    row["train_ours"] = run_worker("train", {"ours": True, "corpus": str(corpus), "vocab": vocab, "out": str(tok_path)})
    row["train_hf_1thread"] = run_worker("train", {"ours": False, "corpus": str(corpus), "vocab": vocab, "out": ""}, threads=1)
    if not skip_hf_default:
        row["train_hf_default"] = run_worker("train", {"ours": False, "corpus": str(corpus), "vocab": vocab, "out": ""})
    for lib in ("ours", "tiktoken", "hf"):
        row[f"encode_{lib}"] = run_worker("encode", {"lib": lib, "corpus": str(corpus), "tok_path": str(tok_path),
                                                     "export_dir": str(tmp)}, threads=1)
    row["identical_ids"] = len({row[f"encode_{lib}"]["ids_sha"] for lib in ("ours", "tiktoken", "hf")}) == 1
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--mixed-mb", type=float, default=12)
    ap.add_argument("--big-mb", type=float, default=0, help="also train (ours only) on a corpus this large; 0 = skip")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker_main(args.worker[0], json.loads(args.worker[1]))
        return
    rows, big = [], None
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if SHAKESPEARE.exists():
            rows.append(bench_corpus("tinyshakespeare", SHAKESPEARE, args.vocab, tmp))
        mixed = build_mixed(tmp / "mixed.txt", args.mixed_mb)
        rows.append(bench_corpus(f"mixed {args.mixed_mb:g} MB", mixed, args.vocab, tmp))
        if args.big_mb:
            corpus = build_mixed(tmp / "big.txt", args.big_mb)
            big = {"corpus": f"mixed {args.big_mb:g} MB", "mb": corpus.stat().st_size / 1e6,
                   "train_ours": run_worker("train", {"ours": True, "corpus": str(corpus), "vocab": args.vocab,
                                                      "out": str(tmp / "big.json")})}
    if args.json:
        print(json.dumps({"vocab": args.vocab, "cpu": __import__("machine").cpu_name(), "rows": rows, "big": big}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    import torch  # only to report what torch says of this CPU: BPE itself does not use torch

    from machine import describe

    machine = describe(torch.backends.cpu.get_cpu_capability()) + f"; HF default threads: {os.cpu_count()}; encode: 1 thread"
    table = Table(title=f"BPE, vocab {args.vocab}, GPT-4 split; seconds (peak MB); CPU {machine}")
    for col in ("corpus", "train: ours", "train: HF 1 thread", "train: HF default", "encode MB/s: ours", "tiktoken", "HF",
                "identical ids"):
        table.add_column(col, justify="left" if col == "corpus" else "right")

    def t(r):
        return f"{r['seconds']:.2f} ({r['peak_mb']:.0f})" if r else "-"

    for r in rows:
        table.add_row(f"{r['corpus']} ({r['mb']:.1f} MB)", t(r["train_ours"]), t(r["train_hf_1thread"]), t(r.get("train_hf_default")),
                      f"{r['encode_ours']['mb_per_s']:.2f}", f"{r['encode_tiktoken']['mb_per_s']:.2f}",
                      f"{r['encode_hf']['mb_per_s']:.2f}", "yes" if r["identical_ids"] else "NO")
    console = Console(width=200)
    console.print(table)
    if big:
        console.print(f"{big['corpus']} ({big['mb']:.0f} MB), ours: {t(big['train_ours'])}")


if __name__ == "__main__":
    main()
