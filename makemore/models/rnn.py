"""RNN: the Elman network as a language model (Elman 1990; Mikolov et al. 2010).

h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), logits_t = W_o h_t + b_o, with h_0 learned.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from makemore.models.recurrent import RecurrentConfig, RecurrentLM


@dataclass(kw_only=True)
class RNNConfig(RecurrentConfig):
    pass


class RNN(RecurrentLM):
    rnn_class = nn.RNN

    def cell(self, gx, state):
        (h,) = state
        return (torch.tanh(gx + self.hidden_gates(h)),)  # Mikolov et al. 2010, eq. 2
