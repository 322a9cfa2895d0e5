"""Generation and scoring for every model type, through the models' incremental interface.

- `filter_logits` (pure), in this order: the repetition penalty (on the raw logits, as Hugging Face
  applies it), temperature, top-k, top-p, min-p; temperature 0 = greedy (after the penalty).
- `StopScanner` (pure): cuts streamed text at the first stop sequence and holds back any tail that
  could still become one, so a stop sequence split across tokens is never printed.
- `Decoder` feeds ids to a model and gives the logits of the next id, either through the model's
  `step` (KV cache, carried hidden state, sliding window) or, with `cache=False`, by rerunning the
  whole visible context: the reference the tests compare the cached path against. Both see the
  same context (`LanguageModel.context_length`).
- `generate(kind, ...)`: what a model of a data kind generates, by the kind's declared `output`
  (`GENERATORS`): whole items (boundary to boundary, with a prefix, length bounds in characters,
  log-probabilities, optionally only items not seen in training), or streams of text after a
  prompt, yielded piece by piece as whole characters.
- `score`: the log-probability of a string, as the data kind encodes it for scoring.
"""

from __future__ import annotations

import codecs
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from makemore.data import Dataset, encode_text, normalize, prompt_ids
from makemore.errors import MakemoreError
from makemore.models.base import onednn
from makemore.threads import decoding_tuner
from makemore.train import check_seed
from tokenizer import TokenizerError
from safeio.files import shown

MAX_SAMPLES = 100_000  # per call: more is surely a typo
MAX_NEW_TOKENS = 10_000_000
CHUNK = 1000  # items generated at once


@dataclass(frozen=True)
class Sampling:
    """How the next id is drawn from the logits; validated once, here."""

    temperature: float = 1.0  # 0 = greedy; so is anything below MIN_TEMPERATURE
    top_k: int | None = None  # keep the k likeliest
    top_p: float | None = None  # keep the smallest set whose probability reaches p (nucleus)
    min_p: float | None = None  # keep ids at least min_p times as likely as the likeliest
    repetition_penalty: float = 1.0  # CTRL (Keskar et al. 2019): ids already in the context made less likely; 1 = off

    def __post_init__(self):
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise MakemoreError(f"`temperature` {self.temperature}: must be 0 (greedy) or more")
        if self.top_k is not None and self.top_k < 1:
            raise MakemoreError(f"`top_k` {self.top_k}: must be at least 1")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise MakemoreError(f"`top_p` {self.top_p}: must be above 0 and at most 1")
        if self.min_p is not None and not 0 <= self.min_p <= 1:
            raise MakemoreError(f"`min_p` {self.min_p}: must be from 0 to 1")
        if not (self.repetition_penalty > 0 and math.isfinite(self.repetition_penalty)):
            raise MakemoreError(f"`repetition_penalty` {self.repetition_penalty}: must be a positive number (1 = off, 1.2 is usual)")


MIN_TEMPERATURE = 1e-4  # below it sampling is greedy: dividing the logits by less can overflow to inf - inf = NaN


def greedy(s: Sampling) -> bool:
    return s.temperature < MIN_TEMPERATURE


def penalize(logits: torch.Tensor, context: torch.Tensor | None, penalty: float) -> torch.Tensor:
    """The logits (B, V) with every id in `context` (B, n) made less likely: its logit divided by
    `penalty` where positive, multiplied where negative (CTRL's rule as Hugging Face's
    RepetitionPenaltyLogitsProcessor applies it; an id counts once however often it occurs)."""
    if penalty == 1 or context is None or context.shape[-1] == 0:
        return logits
    seen = logits.gather(-1, context)  # (B, n)
    return logits.scatter(-1, context, torch.where(seen > 0, seen / penalty, seen * penalty))


def filter_logits(logits: torch.Tensor, s: Sampling, context: torch.Tensor | None = None) -> torch.Tensor:
    """The logits (..., V) to sample from: the repetition penalty on the ids of `context`, then divided
    by the temperature, then everything outside top-k, then outside top-p, then below min-p set to
    -inf. The likeliest id always survives."""
    logits = penalize(logits, context, s.repetition_penalty)
    logits = logits if greedy(s) else logits / s.temperature
    if s.top_k is not None and s.top_k < logits.shape[-1]:
        kth = torch.topk(logits, s.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if s.top_p is not None and s.top_p < 1:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        before = probs.cumsum(dim=-1) - probs  # probability of the ids strictly likelier
        drop = (before >= s.top_p).scatter(-1, order, before >= s.top_p)
        logits = logits.masked_fill(drop, -math.inf)
    if s.min_p is not None and s.min_p > 0:
        probs = logits.softmax(dim=-1)
        logits = logits.masked_fill(probs < s.min_p * probs.max(dim=-1, keepdim=True).values, -math.inf)
    return logits


def draw(logits: torch.Tensor, s: Sampling, gen: torch.Generator, context: torch.Tensor | None = None) -> torch.Tensor:
    """One id per row of `logits` (B, V); `context` (B, n), the ids the repetition penalty counts."""
    if greedy(s):
        return penalize(logits, context, s.repetition_penalty).argmax(dim=-1)
    probs = filter_logits(logits, s, context).softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=gen).squeeze(1)


def make_generator(seed: int | None, device) -> torch.Generator:
    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(check_seed(seed))
    return gen


class Decoder:
    """Feeds a growing batch of sequences to a model; `next_logits` gives the logits after them."""

    def __init__(self, model: nn.Module, cache: bool = True):
        self.model, self.cache = model, cache
        self.state, self.begin, self.fed = None, -1, 0
        self.tuner = decoding_tuner() if next(model.parameters()).is_cpu else None  # threads, as training tunes them

    def next_logits(self, seq: torch.Tensor) -> torch.Tensor:
        """Logits (B, V) of the id after `seq` (B, n), which only grows between calls."""
        start = time.perf_counter()
        logits = self.step(seq)
        if self.tuner is not None:
            self.tuner.tick(time.perf_counter() - start)
        return logits

    @torch.inference_mode()
    def step(self, seq: torch.Tensor) -> torch.Tensor:
        """`next_logits`' work: the new ids through the model's cache, or the whole context without one."""
        n = seq.shape[1]
        begin = n - self.model.context_length(n)
        if not self.cache:
            return widened(self.model(seq[:, begin:])[:, -1])
        if begin != self.begin:  # a new context: start over from its first id
            self.state, self.begin, self.fed = self.model.init_state(seq.shape[0]), begin, begin
        new = seq[:, self.fed :]
        with onednn(self.model.onednn and new.shape[1] > 1):  # one position: oneDNN's setup costs more than it saves
            logits, self.state = self.model.step(new, self.state)
        self.fed = n
        return widened(logits[:, -1])


def widened(logits: torch.Tensor) -> torch.Tensor:
    """bfloat16 logits (`--dtype`) as float32, for filtering and log-probabilities; wider ones as they are."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def encode_prompt(tok, text: str, option: str) -> list[int]:
    try:
        return encode_text(tok, normalize(text))
    except TokenizerError as e:
        raise MakemoreError(f"{option} {shown(text)}: {e}") from None


@dataclass
class Item:
    text: str
    logprob: float  # natural log, the boundary at the end included
    ended: str = "end"  # "end": the model chose the boundary; "length": the block size or `max_len` forced it


@torch.no_grad()
def sample_items(model: nn.Module, tok, n: int, s: Sampling, seed: int | None = None, prefix: str = "",
                 min_len: int = 0, max_len: int | None = None, cache: bool = True) -> list[Item]:
    """`n` items, each beginning with `prefix`, of `min_len` to `max_len` characters (prefix included)."""
    check_count(n)
    block = model.config.block_size
    start = [tok.eot_id, *encode_prompt(tok, prefix, "`prefix`")]
    if len(start) > block:
        raise MakemoreError(f"`prefix` is {len(start) - 1} tokens; the model's items are at most {block - 1}")
    if max_len is not None and max_len < max(min_len, 1):
        raise MakemoreError(f"`max_len` {max_len}: must be at least 1 and at least `min_len` ({min_len})")
    if min_len < 0:
        raise MakemoreError(f"`min_len` {min_len}: must be 0 or more")
    if max_len is not None and len(normalize(prefix)) > max_len:
        raise MakemoreError(f"`prefix` is {len(normalize(prefix))} characters, more than `max_len` {max_len}")
    device = next(model.parameters()).device
    lengths = torch.tensor([len(tok.decode([i])) if i != tok.eot_id else 0 for i in range(tok.vocab_size)], device=device)
    gen = make_generator(seed, device)
    model.eval()
    items = []
    for first in range(0, n, CHUNK):
        b = min(CHUNK, n - first)
        seq = torch.tensor([start] * b, device=device)
        chars = torch.full((b,), len(normalize(prefix)), device=device)
        logprob = torch.zeros(b, device=device)
        done = torch.zeros(b, dtype=torch.bool, device=device)
        forced = torch.zeros(b, dtype=torch.bool, device=device)
        decoder = Decoder(model, cache)
        while seq.shape[1] <= block and not done.all():
            raw = decoder.next_logits(seq)  # (b, V)
            allowed = constrain(raw, chars, lengths, tok.eot_id, min_len, max_len, last=seq.shape[1] == block)
            nxt = torch.where(done, tok.eot_id, draw(allowed, s, gen, seq[:, 1:]))  # not the opening boundary
            logprob += torch.where(done, 0.0, F.log_softmax(raw, dim=-1).gather(1, nxt[:, None]).squeeze(1))  # the model's own
            chars += torch.where(done, 0, lengths[nxt])
            forced |= ~done & (nxt == tok.eot_id) & (torch.isfinite(allowed).sum(dim=-1) == 1)  # no other id was allowed
            done |= nxt == tok.eot_id
            seq = torch.cat([seq, nxt[:, None]], dim=1)
        for row, lp, cut in zip(seq[:, 1:].tolist(), logprob.tolist(), forced.tolist()):
            row = row[: row.index(tok.eot_id)] if tok.eot_id in row else row
            items.append(Item(tok.decode(row), lp, "length" if cut else "end"))
    return items


def check_count(n: int) -> None:
    if not 1 <= n <= MAX_SAMPLES:
        raise MakemoreError(f"-n {n}: must be from 1 to {MAX_SAMPLES:,}")


def constrain(logits, chars, lengths, eot: int, min_len: int, max_len: int | None, last: bool) -> torch.Tensor:
    """Forbid the boundary before `min_len` characters, and ids that would pass `max_len`; at the
    last position the model can take, only the boundary is left (the item may then be shorter than
    `min_len`: `novel_items` draws again)."""
    logits = logits.clone()
    if last:
        keep = logits[:, eot].clone()
        logits.fill_(-math.inf)
        logits[:, eot] = keep
        return logits
    if min_len:
        logits[:, eot] = torch.where(chars < min_len, -math.inf, logits[:, eot])
    if max_len is not None:
        too_long = chars[:, None] + lengths[None, :] > max_len  # (b, V)
        too_long[:, eot] = False
        logits = logits.masked_fill(too_long, -math.inf)
    return logits


def default_prompt(tok) -> list[int]:
    """Text mode with an empty prompt starts after a newline (or, if the vocabulary has none, after
    its first character); that start is not part of the output."""
    try:
        return encode_text(tok, "\n")
    except TokenizerError:
        return [1]


@torch.inference_mode()
def stream_text(model: nn.Module, tok, prompt: list[int], max_new_tokens: int, s: Sampling, seed: int | None = None,
                cache: bool = True) -> Iterator[int]:
    """Yield `max_new_tokens` ids, one at a time, after `prompt`; past the block size the context
    moves on (`LanguageModel.context_length`)."""
    if not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise MakemoreError(f"`max_new_tokens` {max_new_tokens}: must be from 1 to {MAX_NEW_TOKENS:,}")
    device = next(model.parameters()).device
    gen = make_generator(seed, device)
    model.eval()
    decoder = Decoder(model, cache)
    seq = torch.tensor([prompt], device=device)
    for _ in range(max_new_tokens):
        nxt = draw(decoder.next_logits(seq), s, gen, seq)  # (1,)
        seq = torch.cat([seq, nxt[:, None]], dim=1)
        yield int(nxt)


@dataclass
class Score:
    text: str
    logprob: float  # natural log of the probability of the whole string
    tokens: list[tuple[str, float]]  # each predicted token's piece and log-probability
    chars: int  # characters predicted (the end of an item counts as one)

    @property
    def bits_per_char(self) -> float:
        return -self.logprob / math.log(2) / max(self.chars, 1)


@torch.no_grad()
def score(model: nn.Module, tok, kind: type[Dataset], text: str) -> Score:
    """Log-probability of `text` as `kind` scores it (`Dataset.scored`): a whole item in lines mode;
    in text mode every token after the first, given the ones before it (what `eval` measures)."""
    text = normalize(text)
    try:
        seq, chars, boundary_last = kind.scored(tok, text, model.config.block_size)
    except TokenizerError as e:
        raise MakemoreError(f"string {shown(text)}: {e}") from None
    device = next(model.parameters()).device
    model.eval()
    decoder = Decoder(model, cache=True)
    x = torch.tensor([seq], device=device)
    pieces = []
    for t in range(1, len(seq)):
        lp = float(F.log_softmax(decoder.next_logits(x[:, :t]), dim=-1)[0, seq[t]])
        pieces.append(("" if t == len(seq) - 1 and boundary_last else tok.decode([seq[t]]), lp))
    return Score(text, sum(lp for _, lp in pieces), pieces, chars)


NOVEL_TRIES = 20  # --novel-only and --min-len: samples drawn per sample wanted, at most


def novel_items(model: nn.Module, tok, n: int, s: Sampling, seed: int | None, prefix: str, min_len: int,
                max_len: int | None, cache: bool, exclude: set[str] | None) -> list[Item]:
    """`n` items from `sample_items` that are at least `min_len` characters long (an item that reached
    the block size may be shorter) and, with `exclude`, not in it: drawn again until there are `n`, at
    most NOVEL_TRIES times as many draws as wanted; fewer come back if that bound is hit."""
    check_count(n)
    wanted = lambda it: len(it.text) >= min_len and (exclude is None or it.text not in exclude)  # noqa: E731
    found: list[Item] = []
    drawn, round_ = 0, 0
    while len(found) < n and drawn < NOVEL_TRIES * n:
        want = n if round_ == 0 else min(max(2 * (n - len(found)), 16), MAX_SAMPLES)
        round_seed = None if seed is None else seed + round_
        batch = sample_items(model, tok, want, s, round_seed, prefix, min_len, max_len, cache)
        drawn, round_ = drawn + want, round_ + 1
        found += [it for it in batch if wanted(it)][: n - len(found)]
    if not found and min_len:
        raise MakemoreError(f"`min_len` {min_len}: none of {drawn:,} samples was that long "
                            f"(the model's items are at most {model.config.block_size - 1} tokens); ask for fewer characters")
    return found


# What a model of each data kind generates. ----------------------------------------------------

MAX_STREAMS = 100  # streams per call


@dataclass
class Request:
    """What to generate; each argument means something for one kind of output, or for both."""

    sampling: Sampling = Sampling()
    n: int | None = None  # items (default 20) or streams (default 1)
    seed: int | None = None
    prompt: str | None = None  # items: the prefix of every item; streams: the prompt (default: a new line)
    min_len: int = 0  # items: characters at least
    max_len: int | None = None  # items: characters at most
    novel_only: bool = False  # items: only ones not in the training set
    max_new_tokens: int | None = None  # streams: tokens to generate (default 500; answers: up to the block size)
    cache: bool = True  # the incremental path; False reruns the whole context (the reference)
    stop: tuple[str, ...] = ()  # streams: end at the first of these strings (not part of the output)
    template: str | None = None  # answers: the prompt template the model was trained with (default: `pairs.DEFAULT_TEMPLATE`)

    def __post_init__(self):
        if any(not stop for stop in self.stop):
            raise MakemoreError("`stop`: a stop sequence must not be empty")


@dataclass
class Output:
    """One generated item or stream: `row` is what `--json` prints of it."""

    text: str
    row: dict


@dataclass
class Piece:
    """Text of a stream as it is made, whole characters only."""

    text: str


class TextStream:
    """Decodes generated ids to text as they come; a character split across tokens waits for its rest."""

    def __init__(self, tok):
        self.tok, self.ids = tok, []
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.parts: list[str] = []

    def add(self, i: int) -> str:
        self.ids.append(i)
        piece = self.decoder.decode(self.tok.decode_bytes([i]))
        self.parts.append(piece)
        return piece

    def finish(self) -> str:
        tail = self.decoder.decode(b"", final=True)
        self.parts.append(tail)
        return tail


def generate_items(model: nn.Module, tok, req: Request, seen: set[str] | None) -> Iterator[Output]:
    """Whole items; each row says whether it is new (None when `seen` is unknown)."""
    if req.novel_only and seen is None:
        raise MakemoreError("`novel_only`: the model's training data is not found or has changed, so new cannot be told from seen")
    items = novel_items(model, tok, 20 if req.n is None else req.n, req.sampling, req.seed, req.prompt or "", req.min_len,
                        req.max_len, req.cache, seen if req.novel_only else None)
    for it in items:
        yield Output(it.text, {"text": it.text, "new": None if seen is None else it.text not in seen, "logprob": it.logprob,
                               "ended": it.ended})


def generate_text(model: nn.Module, tok, req: Request, seen: set[str] | None = None) -> Iterator[Piece | Output]:
    """Streams: the prompt, then `max_new_tokens` tokens (or up to a stop sequence), as pieces of
    text while they come, then the whole."""
    n = stream_count(req, "text")
    prompt = req.prompt or ""
    ids = (encode_prompt(tok, prompt, "`prompt`") if prompt else []) or default_prompt(tok)
    for k in range(n):
        yield Piece(prompt)
        for event in stream_until(model, tok, ids, req, 500, None if req.seed is None else req.seed + k):
            if isinstance(event, Ending):
                yield Output(prompt + event.text, {"prompt": prompt, "text": event.text, "tokens": event.tokens} | event.row())
            else:
                yield event


def generate_answers(model: nn.Module, tok, req: Request, seen: set[str] | None = None) -> Iterator[Piece | Output]:
    """Answers to the instruction `req.prompt`, formatted with the model's template: each streamed
    until the end token, a stop sequence or `max_new_tokens` (default: what is left of the block)."""
    n = stream_count(req, "pairs")
    if not req.prompt:
        raise MakemoreError("`prompt`: give the instruction to answer")
    ids = prompt_ids(tok, req.template, req.prompt, "`prompt`")
    room = max(model.config.block_size - len(ids), 1)
    for k in range(n):
        for event in stream_until(model, tok, ids, req, room, None if req.seed is None else req.seed + k, tok.eot_id):
            if isinstance(event, Ending):
                yield Output(event.text, {"prompt": req.prompt, "text": event.text, "tokens": event.tokens} | event.row())
            else:
                yield event


def stream_count(req: Request, mode: str) -> int:
    n = 1 if req.n is None else req.n
    if not 1 <= n <= MAX_STREAMS:
        raise MakemoreError(f"`n` {n}: {mode} mode makes 1 to {MAX_STREAMS} streams")
    return n


@dataclass
class Ending:
    """How a stream ended: `reason` is "length" (`max_new_tokens`), "end" (the end token) or "stop"."""

    text: str  # everything printed, the stop sequence not included
    tokens: int  # ids generated, the end token and the stop sequence's included
    reason: str
    stop: str | None = None  # the stop sequence that ended it

    def row(self) -> dict:
        return {"ended": self.reason} | ({"stop": self.stop} if self.stop is not None else {})


def stream_until(model: nn.Module, tok, ids: list[int], req: Request, default_tokens: int, seed: int | None,
                 end_id: int | None = None) -> Iterator[Piece | Ending]:
    """Pieces of text generated after `ids` until `end_id`, a stop sequence of `req.stop` or the
    token budget, then the `Ending`; text that may begin a stop sequence waits (`StopScanner`)."""
    text, scan = TextStream(tok), StopScanner(req.stop)
    budget = default_tokens if req.max_new_tokens is None else req.max_new_tokens
    reason, count = "length", 0
    for i in stream_text(model, tok, ids, budget, req.sampling, seed, req.cache):
        count += 1
        if i == end_id:
            reason = "end"
            break
        piece = scan.feed(text.add(i))
        if piece:
            yield Piece(piece)
        if scan.stopped is not None:
            reason = "stop"
            break
    if reason != "stop":
        tail = scan.feed(text.finish())
        tail += "" if scan.stopped is not None else scan.flush()
        if tail:
            yield Piece(tail)
        reason = "stop" if scan.stopped is not None else reason
    yield Ending(scan.out, count, reason, scan.stopped)


class StopScanner:
    """Text in, text safe to print out: cut at the first stop sequence (which is not printed), and
    any tail that could be the start of one held back until the next text decides it."""

    def __init__(self, stops: tuple[str, ...] | list[str] = ()):
        if any(not stop for stop in stops):
            raise MakemoreError("`stop`: a stop sequence must not be empty")
        self.stops, self.held, self.out = tuple(stops), "", ""
        self.stopped: str | None = None  # the stop sequence found

    def feed(self, text: str) -> str:
        """The part of everything fed so far that is now certain to be output and was not returned yet."""
        if self.stopped is not None:
            return ""
        buf = self.held + text
        found = [(buf.find(stop), stop) for stop in self.stops if stop in buf]
        if found:
            at, self.stopped = min(found)
            return self._emit(buf[:at], "")
        keep = max((k for stop in self.stops for k in range(min(len(stop) - 1, len(buf)), 0, -1)
                    if buf.endswith(stop[:k])), default=0)  # the longest tail that begins a stop sequence
        return self._emit(buf[: len(buf) - keep], buf[len(buf) - keep :])

    def flush(self) -> str:
        """At the end of the stream: what was held back is output after all."""
        return self._emit(self.held, "")

    def _emit(self, text: str, held: str) -> str:
        self.held = held
        self.out += text
        return text


GENERATORS = {"items": generate_items, "stream": generate_text, "answers": generate_answers}  # by a data kind's `output`


def generate(kind: type[Dataset], model: nn.Module, tok, req: Request, seen: set[str] | None = None) -> Iterator[Piece | Output]:
    """What a model trained on data of `kind` generates for `req`."""
    return GENERATORS[kind.output](model, tok, req, seen)
