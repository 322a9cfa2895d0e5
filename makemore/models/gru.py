"""GRU: gated recurrent unit (Cho et al. 2014), in the form torch's `nn.GRU` computes.

r = σ(W_ir x + b_ir + W_hr h + b_hr)             reset gate
z = σ(W_iz x + b_iz + W_hz h + b_hz)             update gate
n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))    candidate state
h' = (1 - z) ⊙ n + z ⊙ h
(Cho et al. apply r to h before W_hn; torch, like cuDNN, applies it after. Both learn equally well.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from makemore.models.recurrent import RecurrentConfig, RecurrentLM


@dataclass(kw_only=True)
class GRUConfig(RecurrentConfig):
    pass


class GRU(RecurrentLM):
    rnn_class = nn.GRU

    def cell(self, gx, state):
        (h,) = state
        xr, xz, xn = gx.chunk(3, dim=-1)  # (B, H) each
        hr, hz, hn = self.hidden_gates(h).chunk(3, dim=-1)
        r = torch.sigmoid(xr + hr)
        z = torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        return ((1 - z) * n + z * h,)
