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

    def through_time(self, idx, state):
        r = self.rnn
        a = self.input_shares(idx, r.bias_ih_l0 + r.bias_hh_l0)  # (T, B, H): the inputs' share, with both biases
        return ElmanThroughTime.apply(a, state[0], r.weight_hh_l0)  # (T, B, H)


class ElmanThroughTime(torch.autograd.Function):
    """h_t = tanh(a_t + W h_{t-1}) for t = 1..T, with backpropagation through time written out.
    Why by hand: autograd through torch's kernel records a dozen nodes a position (bench/handwritten.py:
    1.48x a names rnn step; tests/test_recurrent.py checks the gradients against torch's).

    Backward, from the last step to the first: the gradient reaching h_t (from its logits, and from
    h_{t+1} through W) times tanh' = 1 - h_t^2 is the gradient of a_t; W's gradient is then one
    product over all steps, sum_t da_t^T h_{t-1}.
    (The loops walk per-step views made once by `unbind`: indexing a tensor in Python costs about
    as much as one of these small operations. Each h_t and da_t starts as its known term, a_t or
    dL/dh_t, and the product is added in place: an `addmm` with `out=` copies that term first.)"""

    @staticmethod
    def forward(ctx, a, h0, w):  # a: (T, B, H), the inputs' share with both biases; h0: (B, H); w: W_hh (H, H)
        hs = torch.cat((h0.unsqueeze(0), a))  # h_0, then each h_t starts as a_t
        h, wt = hs.unbind(0), w.t()
        for h_prev, h_t in zip(h, h[1:]):
            h_t.addmm_(h_prev, wt).tanh_()
        ctx.save_for_backward(hs, w)
        return hs[1:]

    @staticmethod
    def backward(ctx, grad):  # grad: (T, B, H), the loss's gradient at each h_t
        hs, w = ctx.saved_tensors
        slope = 1 - hs[1:] * hs[1:]  # tanh' at every step
        da = grad.clone(memory_format=torch.contiguous_format)  # becomes the gradient of each a_t
        s, d = slope.unbind(0), da.unbind(0)
        d[-1].mul_(s[-1])
        for t in range(len(d) - 2, -1, -1):
            d[t].addmm_(d[t + 1], w).mul_(s[t])  # (dL/dh_t + da_{t+1} W) * tanh'
        flat = da.reshape(-1, w.shape[0])
        return da, da[0] @ w, flat.t() @ hs[:-1].reshape(-1, w.shape[0])
