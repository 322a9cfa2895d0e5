"""A conversation with a model: each message written with the run's prompt template, answered as a
stream, the earlier turns kept in front of it while they fit.

The context of an answer is the turns so far, each `<eot> prompt answer`, then `<eot>` and the new
message's prompt: what pairs mode trains on, one record after another. Before each answer the
oldest turns are dropped until the context leaves `room` tokens for the answer within the
model's block size (a quarter of it by default); a message that does not fit alone is an error.
An answer ends at the end token, a stop sequence or its token budget (`sample.stream_until`).
Nothing here reads the keyboard or prints: the `chat` command does.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from torch import nn

from makemore.data import encode_text, normalize, prompt_ids
from makemore.errors import MakemoreError
from makemore.sample import Ending, Output, Piece, Request, stream_until
from tokenizer import TokenizerError


@dataclass
class Dropped:
    """Old turns left out of the context, so that the new message and its answer fit."""

    turns: int


@dataclass
class Conversation:
    model: nn.Module
    tok: object
    template: str | None  # the run's (None: the default)
    request: Request  # sampling, stop sequences, max_new_tokens, seed, cache
    room: int | None = None  # tokens kept free for an answer (default: a quarter of the block size)
    turns: list[list[int]] = field(default_factory=list)  # each earlier turn's ids: <eot> prompt answer

    @property
    def block_size(self) -> int:
        return self.model.config.block_size

    def context(self, message: str) -> tuple[list[int], int]:
        """The ids an answer to `message` follows, and how many of the oldest turns were left out."""
        prompt = prompt_ids(self.tok, self.template, message, "message")
        room = self.room if self.room is not None else max(1, self.block_size // 4)
        if len(prompt) + 1 > self.block_size:
            raise MakemoreError(f"the message is {len(prompt)} tokens with its template; the model's context is "
                                f"{self.block_size} tokens, and the answer needs room too")
        kept, used = 0, len(prompt) + min(room, self.block_size - len(prompt))
        for turn in reversed(self.turns):
            if used + len(turn) > self.block_size:
                break
            used, kept = used + len(turn), kept + 1
        earlier = [i for turn in self.turns[len(self.turns) - kept :] for i in turn]
        return earlier + prompt, len(self.turns) - kept

    def reply(self, message: str) -> Iterator[Dropped | Piece | Output]:
        """`Dropped` when old turns were left out, the answer's pieces as they come, then the answer
        (`Output`, its row what `chat --once --json` prints). Only a finished answer joins the turns."""
        ids, dropped = self.context(message)
        if dropped:
            yield Dropped(dropped)
        req = self.request
        seed = None if req.seed is None else req.seed + len(self.turns)
        end_id = self.tok.eot_id if self.tok.has_boundary else None
        for event in stream_until(self.model, self.tok, ids, req, max(1, self.block_size - len(ids)), seed, end_id):
            if isinstance(event, Ending):
                self.turns.append(prompt_ids(self.tok, self.template, message, "message") + self.encode(event.text))
                yield Output(event.text, {"message": message, "text": event.text, "tokens": event.tokens,
                                          "context_tokens": len(ids), "dropped_turns": dropped} | event.row())
            else:
                yield event

    def encode(self, answer: str) -> list[int]:
        try:
            return encode_text(self.tok, normalize(answer))
        except TokenizerError:  # (a character the decoder replaced): the answer stays out of the context
            return []
