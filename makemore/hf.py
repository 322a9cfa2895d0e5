"""Hugging Face GPT-2 checkpoints: import a folder as a makemore run, export a run as such a folder.

GPT-2 is our transformer with its own choices set (`TransformerConfig`: biases, a tied head without
a bias, GELU's tanh approximation, `n_positions`), so a checkpoint converts by names alone:
`wte` is `tok_emb`, `h.3.attn.c_attn` is `blocks.3.attn.qkv` and so on (`THEIRS`). Their linears
are `Conv1D`s, whose weights are stored (in, out): transposed on the way in and out. Keys may carry
the `transformer.` prefix (GPT2LMHeadModel) or not (GPT2Model, OpenAI's upload); the head is the
embedding unless the config says `tie_word_embeddings: false`. The weights are read tensor by
tensor into a model allocated once (`tensorfile`), from `model.safetensors` or the shards its
`model.safetensors.index.json` names; a pickle (`pytorch_model.bin`) is never opened. The
tokenizer comes from `tokenizer.json`, or GPT-2's `vocab.json` + `merges.txt`, through the
tokenizer package's own import. An import records where it came from (`TrainingRecord.origin`).

Not handled: other architectures (GPT-Neo, Llama...), GPT-2 variants whose attention is scaled
otherwise (`scale_attn_by_inverse_layer_idx`) or whose MLP is not 4x wide; a vocabulary padded
beyond the tokenizer's ids. Each is refused in one line naming the setting.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from makemore import checkpoint, memory, models, tensorfile
from makemore.checkpoint import Checkpoint, TrainingRecord
from makemore.errors import MakemoreError
from makemore.models.transformer import TransformerConfig
from makemore.runlock import RunLock
from safeio.files import check_output, check_readable, read_input, shown, write_atomic
from tokenizer import TokenizerError
from tokenizer.export import huggingface_json
from tokenizer.imports import import_huggingface, import_vocab_merges

PREFIX = "transformer."
# our name -> theirs (without the prefix), and whether the weight is a Conv1D's (stored transposed)
THEIRS = [
    (r"tok_emb\.weight", "wte.weight", False),
    (r"pos_emb\.weight", "wpe.weight", False),
    (r"blocks\.(\d+)\.ln1\.(weight|bias)", r"h.\1.ln_1.\2", False),
    (r"blocks\.(\d+)\.ln2\.(weight|bias)", r"h.\1.ln_2.\2", False),
    (r"blocks\.(\d+)\.attn\.qkv\.weight", r"h.\1.attn.c_attn.weight", True),
    (r"blocks\.(\d+)\.attn\.qkv\.bias", r"h.\1.attn.c_attn.bias", False),
    (r"blocks\.(\d+)\.attn\.proj\.weight", r"h.\1.attn.c_proj.weight", True),
    (r"blocks\.(\d+)\.attn\.proj\.bias", r"h.\1.attn.c_proj.bias", False),
    (r"blocks\.(\d+)\.mlp\.0\.weight", r"h.\1.mlp.c_fc.weight", True),
    (r"blocks\.(\d+)\.mlp\.0\.bias", r"h.\1.mlp.c_fc.bias", False),
    (r"blocks\.(\d+)\.mlp\.2\.weight", r"h.\1.mlp.c_proj.weight", True),
    (r"blocks\.(\d+)\.mlp\.2\.bias", r"h.\1.mlp.c_proj.bias", False),
    (r"ln_f\.(weight|bias)", r"ln_f.\1", False),
]
HEAD = "lm_head.weight"  # at the top level, never prefixed
BUFFERS = re.compile(r"h\.\d+\.attn\.(masked_)?bias$")  # older files store the causal mask: not weights
ACTIVATIONS = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "exact"}


def their_name(ours: str) -> tuple[str, bool]:
    """The Hugging Face name (without the prefix) of one of our transformer's weights, and whether it is transposed."""
    if ours == "head.weight":
        return HEAD, False
    for pattern, theirs, transposed in THEIRS:
        m = re.fullmatch(pattern, ours)
        if m:
            return m.expand(theirs), transposed
    raise KeyError(ours)


def config_from(d, name: str) -> TransformerConfig:
    """Our config for a GPT-2 `config.json`; a setting we do not implement is refused by name."""
    if not isinstance(d, dict):
        raise MakemoreError(f"{name}: not a config.json (not a JSON object)")
    if d.get("model_type") != "gpt2":
        raise MakemoreError(f"{name}: model_type {shown(d.get('model_type'))}; only GPT-2 checkpoints (model_type 'gpt2') import")
    unsupported = [("scale_attn_by_inverse_layer_idx", True), ("scale_attn_weights", False), ("add_cross_attention", True)]
    for key, bad in unsupported:
        if d.get(key) == bad:
            raise MakemoreError(f"{name}: {key}={json.dumps(bad)} is not supported (GPT-2 has {json.dumps(not bad)})")
    act = d.get("activation_function", "gelu_new")
    if act not in ACTIVATIONS:
        raise MakemoreError(f"{name}: activation_function {shown(act)} is not supported; choose one of {', '.join(ACTIVATIONS)}")
    try:
        C = d.get("n_embd", 768)
        if d.get("n_inner") not in (None, 4 * C):
            raise MakemoreError(f"{name}: n_inner={d['n_inner']} is not supported (the MLP is 4 x n_embd = {4 * C} wide)")
        positions = d.get("n_positions", 1024)
        return TransformerConfig(vocab_size=d.get("vocab_size", 50257), block_size=positions, n_layer=d.get("n_layer", 12),
                                 n_head=d.get("n_head", 12), n_embd=C, dropout=0.0, init="gpt2", bias=True, head_bias=False,
                                 tie_head=bool(d.get("tie_word_embeddings", True)), gelu=ACTIVATIONS[act],
                                 ln_eps=float(d.get("layer_norm_epsilon", 1e-5)), n_positions=positions)
    except TypeError as e:
        raise MakemoreError(f"{name}: a size in config.json is not a number ({e})") from None


def find_files(sources: list[Path]) -> dict[str, Path]:
    """The files of a Hugging Face checkpoint: a folder, or its files named one by one (by their usual names)."""
    if len(sources) == 1 and sources[0].is_dir():
        sources = sorted(sources[0].iterdir())
    found = {}
    for p in sources:
        if not p.is_dir():
            check_readable(p, "file")
            found[p.name] = p
    return found


def weight_files(files: dict[str, Path]) -> list[Path]:
    if "model.safetensors" in files:
        return [files["model.safetensors"]]
    index = files.get("model.safetensors.index.json")
    if index is not None:
        d = read_json(index)
        weight_map = d.get("weight_map") if isinstance(d, dict) else None
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise MakemoreError(f"{index}: no weight_map of tensor: file")
        shards = sorted(set(weight_map.values()))
        for s in shards:
            if Path(s).name != s:
                raise MakemoreError(f"{index}: shard {shown(s)} is not a file beside it")
        return [index.parent / s for s in shards]
    pickles = [n for n in files if n.endswith((".bin", ".pt", ".pth", ".ckpt"))]
    if pickles:
        raise MakemoreError(f"{files[pickles[0]]}: a pickle, which makemore never loads (it can run code); "
                            f"get the model.safetensors of this model, or convert it with safetensors")
    raise MakemoreError("no model.safetensors (or model.safetensors.index.json) among the files given")


def read_json(path: Path):
    try:
        return json.loads(read_input(path, path.name))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise MakemoreError(f"{path}: not valid JSON") from None


def read_tokenizer(files: dict[str, Path]):
    try:
        if "tokenizer.json" in files:
            return import_huggingface(files["tokenizer.json"])
        if "vocab.json" in files and "merges.txt" in files:
            return import_vocab_merges(files["vocab.json"], files["merges.txt"])
    except TokenizerError as e:
        raise MakemoreError(str(e)) from None
    raise MakemoreError("no tokenizer among the files given: tokenizer.json, or vocab.json and merges.txt")


@torch.no_grad()
def fill(model, shards: list[Path], tied: bool) -> None:
    """Our model's weights from the shards, by their names; every weight exactly once."""
    ours = {their_name(k): (k, t) for k, t in model.state_dict(keep_vars=True).items()
            if not (tied and k == "head.weight")}
    by_name = {theirs: (k, t, transposed) for (theirs, transposed), (k, t) in ours.items()}
    done = set()
    for shard in shards:
        try:
            header, start, size = tensorfile.header_of(shard)
            table = tensorfile.entries(header, start, size)
        except (OSError, ValueError) as e:
            raise MakemoreError(f"{shard}: {e}") from None
        with open(shard, "rb") as f:
            for name, entry in table.items():
                key = name.removeprefix(PREFIX)
                if BUFFERS.match(key) or (tied and key == HEAD):
                    continue
                if key not in by_name:
                    raise MakemoreError(f"{shard}: tensor {name} is no weight of a GPT-2 of this config.json")
                _, t, transposed = by_name[key]
                try:
                    tensorfile.read_checked(f, name, entry, t.data.t() if transposed else t.data)  # a Conv1D's (in, out) through a view
                except ValueError as e:
                    raise MakemoreError(f"{shard}: {e}") from None
                done.add(key)
    missing = sorted(set(by_name) - done)
    if missing:
        raise MakemoreError(f"{shards[0].parent}: tensor {missing[0]} is missing ({len(missing)} weights in all)")


def import_folder(sources: list[Path], out: Path, overwrite: bool = False) -> Checkpoint:
    """The GPT-2 checkpoint in `sources` (a folder, or its files) as a makemore run folder `out`."""
    from makemore import run as runs  # the run folder's rules (run imports checkpoint, which this module also does)

    files = find_files(sources)
    if "config.json" not in files:
        raise MakemoreError("no config.json among the files given (the model's sizes are in it)")
    shards = weight_files(files)
    config = config_from(read_json(files["config.json"]), str(files["config.json"]))
    runs.check_run_folder(out, [*shards, *files.values()], overwrite)
    tok = read_tokenizer(files)
    if tok.vocab_size != config.vocab_size:
        raise MakemoreError(f"{files['config.json']}: vocab_size {config.vocab_size}, but the tokenizer has {tok.vocab_size} ids")
    n = memory.count_params(lambda: models.build("transformer", config))
    memory.require(4 * n, f"this GPT-2 ({n:,} parameters)", "import a smaller one")
    lock = RunLock(out)
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    lock.acquire()
    try:
        runs.check_unused(out, overwrite)
        model = checkpoint.allocate(lambda: models.build("transformer", config))
        fill(model, shards, config.tie_head)
        origin = {"format": "huggingface", "model_type": "gpt2", "mode": "text", "path": str(shards[0].parent.resolve()),
                  "files": sorted(p.name for p in [*shards, *files.values()] if p.suffix in (".json", ".txt", ".safetensors"))}
        ckpt = Checkpoint("transformer", model.eval(), tok, TrainingRecord(origin=origin))
        runs.clear_earlier(out)
        ckpt.path = checkpoint.save(ckpt, out / checkpoint.FILENAME)
    except BaseException:
        lock.release()
        if made and not any(out.iterdir()):
            out.rmdir()  # a failed import leaves no empty run folder behind
        raise
    lock.release()
    return ckpt


# Export. ------------------------------------------------------------------------------------

EXPORTED = ("config.json", "model.safetensors", "tokenizer.json")


def incompatible(ckpt: Checkpoint) -> str | None:
    """Why `ckpt` cannot be a Hugging Face GPT-2 (the first reason), or None."""
    if ckpt.model_type != "transformer":
        return f"model type {ckpt.model_type}: only a transformer exports as GPT-2"
    c = ckpt.model.config
    if not c.bias:
        return "model option bias=false: GPT-2 has biases in every linear and layer norm"
    if c.head_bias:
        return "model option head_bias=true: GPT-2's output head has no bias (train with --set head_bias=false)"
    if ckpt.tokenizer.kind != "bpe":
        return f"a {ckpt.tokenizer.kind} tokenizer: GPT-2 needs a byte-level BPE tokenizer (train with --tokenizer)"
    return None


def hf_config(ckpt: Checkpoint) -> dict:
    c, tok = ckpt.model.config, ckpt.tokenizer
    eot = tok.eot_id if tok.has_boundary else None
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": c.vocab_size,
            "n_positions": c.positions, "n_embd": c.n_embd, "n_layer": c.n_layer, "n_head": c.n_head, "n_inner": None,
            "activation_function": "gelu_new" if c.gelu == "tanh" else "gelu", "layer_norm_epsilon": c.ln_eps,
            "tie_word_embeddings": c.tie_head, "resid_pdrop": c.dropout, "embd_pdrop": c.dropout, "attn_pdrop": 0.0,
            "scale_attn_weights": True, "use_cache": True, "bos_token_id": eot, "eos_token_id": eot, "torch_dtype": "float32"}


def hf_weights(model) -> dict[str, torch.Tensor]:
    weights = {}
    for k, t in checkpoint.untied(model.state_dict()).items():
        theirs, transposed = their_name(k)
        weights[theirs if theirs == HEAD else PREFIX + theirs] = (t.t() if transposed else t).float().contiguous()
    return weights


def earlier_export(out: Path) -> bool:
    """`out` holds an earlier export (a Hugging Face model.safetensors beside its config.json), not a run."""
    try:
        header, _, _ = tensorfile.header_of(out / "model.safetensors")
    except (OSError, ValueError):
        return False
    meta = header.get("__metadata__")
    return (out / "config.json").is_file() and not (out / checkpoint.LAST).exists() \
        and isinstance(meta, dict) and meta.get("format") == "pt"


def export_folder(run: Path, out: Path) -> list[Path]:
    """The run's best model as a Hugging Face GPT-2 folder `out` (config.json, model.safetensors, tokenizer.json)."""
    ckpt = checkpoint.load(run)
    why = incompatible(ckpt)
    if why:
        raise MakemoreError(f"{ckpt.path}: cannot export as Hugging Face GPT-2: {why}")
    again = earlier_export(out)  # its model.safetensors looks like a run's own file, but is ours to replace
    paths = [check_output(out / name, name, inputs=[ckpt.path, run], owner=again) for name in EXPORTED]
    try:
        tok_json = huggingface_json(ckpt.tokenizer)
    except TokenizerError as e:
        raise MakemoreError(f"{ckpt.path}: cannot export its tokenizer: {e}") from None
    write_atomic(paths[0], json.dumps(hf_config(ckpt), indent=2).encode())
    write_atomic(paths[1], checkpoint.serialize_chunks(hf_weights(ckpt.model), {"format": "pt"}))
    write_atomic(paths[2], json.dumps(tok_json, ensure_ascii=False, indent=1).encode("utf-8"))
    return paths
