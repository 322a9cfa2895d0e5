"""LSTM: long short-term memory (Hochreiter & Schmidhuber 1997; with forget gate as in Graves 2013).

i = σ(W_ii x + W_hi h + b_i), f = σ(W_if x + W_hf h + b_f), g = tanh(W_ig x + W_hg h + b_g),
o = σ(W_io x + W_ho h + b_o);  c' = f ⊙ c + i ⊙ g;  h' = o ⊙ tanh(c').  h_0 and c_0 are learned.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from makemore.models.recurrent import RecurrentConfig, RecurrentLM


@dataclass(kw_only=True)
class LSTMConfig(RecurrentConfig):
    pass


class LSTM(RecurrentLM):
    rnn_class = nn.LSTM
    n_states = 2  # (h, c)

    def cell(self, gx, state):
        h, c = state
        i, f, g, o = (gx + self.hidden_gates(h)).chunk(4, dim=-1)  # (B, H) each; Graves 2013, eq. 7-11
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c
