"""What the recurrent types (rnn, gru, lstm) share: embedding, learned start state, head, two paths.

Each type names a torch module (`nn.RNN`, `nn.GRU`, `nn.LSTM`) whose weights it owns, and writes
its cell out as plain tensor equations in `cell`. `step` runs either torch's fused kernel
(`fused=True`, the fast default) or the written-out cell one step at a time; both read the same
parameters, so a checkpoint loads into either and the tests check they compute the same function.
With `fused=True`, training on a CPU goes through `through_time` where a type has one (rnn, gru):
the same recurrence with its backward pass written out, tested against torch's gradients.
Incremental decoding carries the hidden state: `forward` is `step` from the learned start state.
Every training window (lines or text mode) starts from that learned state too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from makemore.models.base import LanguageModel, ModelConfig


@dataclass(kw_only=True)
class RecurrentConfig(ModelConfig):
    n_embd: int = 64  # token embedding size
    n_hidden: int = 128  # hidden state size
    fused: bool = True  # torch's fused kernel; False runs the written-out cell (same weights, same function)

    def __post_init__(self):
        super().__post_init__()
        self.require_positive("n_embd", "n_hidden")


class RecurrentLM(LanguageModel):
    rnn_class: type[nn.RNNBase]  # set by each type
    n_states = 1  # hidden vectors carried between steps: 1 (h), or 2 for the LSTM (h, c)
    default_lr = 5e-3  # peak learning rate when --lr is not given

    def __init__(self, config: RecurrentConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.rnn = self.rnn_class(config.n_embd, config.n_hidden, batch_first=True)
        self.start = nn.Parameter(torch.zeros(self.n_states, config.n_hidden))  # learned initial state
        self.head = nn.Linear(config.n_hidden, config.vocab_size)

    def cell(self, gx: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """One step: `gx` is the input's share of the gates, W_ih x_t + b_ih; returns the new state."""
        raise NotImplementedError

    def init_state(self, batch_size: int) -> tuple[torch.Tensor, ...]:
        return tuple(s.expand(batch_size, -1).contiguous() for s in self.start)  # n_states x (B, H)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.step(idx, self.init_state(idx.shape[0]))[0]  # (B, T, V)

    def step(self, idx: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        fused = self.config.fused
        if fused and torch.is_grad_enabled() and idx.device.type == "cpu" and (h := self.through_time(idx, state)) is not None:
            return self.head(h).transpose(0, 1), (h[-1],)  # training on a CPU: the type's own backpropagation through time
        x = self.wte(idx)  # (B, T, E)
        if not fused:
            h, state = self.unrolled(x, state)
        else:
            init = tuple(s.unsqueeze(0).contiguous() for s in state)  # (1, B, H): one layer
            h, last = self.rnn(x, init if self.n_states > 1 else init[0])  # (B, T, H)
            state = tuple(s.squeeze(0) for s in (last if self.n_states > 1 else (last,)))
        return self.head(h), state  # (B, T, V)

    def through_time(self, idx: torch.Tensor, state: tuple[torch.Tensor, ...]) -> torch.Tensor | None:
        """All hidden states after tokens `idx` (B, T), time first (T, B, H), by a recurrence whose
        backward pass is written out (rnn, gru); None where torch's kernel is used for training too (lstm: oneDNN's
        beat a written-out LSTM backward on names, docs/performance.md: do not write it again blindly).
        On a CPU, autograd through torch's kernel records a dozen nodes per position; the written-out
        backward is a few fused operations per position and one matrix product for W_hh at the end."""
        return None

    def input_shares(self, idx: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """W_ih x_t + `bias` at every position, time first: (T, B, G*H). A token's embedding enters the
        recurrence only through W_ih, so with fewer tokens in the vocabulary than positions in the batch
        (names: 27 against ~350), W_ih e + bias is computed once per token and looked up: the same
        numbers as projecting each position (up to rounding), at a fraction of the arithmetic, forward and back."""
        wte = self.wte.weight
        if wte.shape[0] < idx.numel():
            return F.embedding(idx.t(), F.linear(wte, self.rnn.weight_ih_l0, bias))
        return F.linear(F.embedding(idx.t(), wte), self.rnn.weight_ih_l0, bias)

    def unrolled(self, x: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        gx = x @ self.rnn.weight_ih_l0.T + self.rnn.bias_ih_l0  # (B, T, G*H): all input projections at once
        outputs = []
        for t in range(x.shape[1]):
            state = self.cell(gx[:, t], state)
            outputs.append(state[0])
        return torch.stack(outputs, dim=1), state  # (B, T, H)

    def hidden_gates(self, h: torch.Tensor) -> torch.Tensor:
        """The hidden state's share of the gates: W_hh h + b_hh, (B, G*H)."""
        return h @ self.rnn.weight_hh_l0.T + self.rnn.bias_hh_l0
