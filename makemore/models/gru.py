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

    def through_time(self, idx, state):
        r = self.rnn
        gx = self.input_shares(idx, r.bias_ih_l0)  # (T, B, 3H): the inputs' share
        return GRUThroughTime.apply(gx, state[0], r.weight_hh_l0, r.bias_hh_l0).transpose(0, 1)  # (B, T, H)


class GRUThroughTime(torch.autograd.Function):
    """The GRU above over T steps, with backpropagation through time written out.

    Forward keeps r, z, n and W_hn h + b_hn of every step. Backward, from the last step to the
    first, with dh the gradient reaching h' = n + z (h - n):
      d a_n = dh (1 - z)(1 - n^2)            a_n = x_n + r (W_hn h + b_hn), n = tanh(a_n)
      d a_z = dh (h - n) z (1 - z)           d a_r = d a_n (W_hn h + b_hn) r (1 - r)
      dh_prev = dh z + [d a_r, d a_z, d a_n r] W_hh   (+ the loss's gradient at h_prev)
    The step-independent factors are computed for all steps at once; W_hh's and b_hh's gradients
    are one product and one sum over all steps."""

    @staticmethod
    def forward(ctx, gx, h0, w, b):  # gx: (T, B, 3H) = W_ih x + b_ih; h0: (B, H); w: W_hh (3H, H); b: b_hh (3H)
        T, H = gx.shape[0], h0.shape[1]
        hs = gx.new_empty(T + 1, *h0.shape)  # h_0 .. h_T
        rz = gx.new_empty(T, h0.shape[0], 2 * H)  # r, z
        n = torch.empty_like(hs[1:])
        hn = torch.empty_like(hs[1:])  # W_hn h + b_hn
        hs[0] = h0
        for t in range(T):
            gh = torch.addmm(b, hs[t], w.t())  # (B, 3H)
            torch.add(gx[t, :, : 2 * H], gh[:, : 2 * H], out=rz[t]).sigmoid_()
            hn[t] = gh[:, 2 * H :]
            torch.addcmul(gx[t, :, 2 * H :], rz[t, :, :H], hn[t], out=n[t]).tanh_()
            torch.addcmul(n[t], rz[t, :, H:], hs[t] - n[t], out=hs[t + 1])  # n + z (h - n)
        ctx.save_for_backward(hs, rz, n, hn, w)
        return hs[1:]

    @staticmethod
    def backward(ctx, grad):  # grad: (T, B, H), the loss's gradient at each h_t
        hs, rz, n, hn, w = ctx.saved_tensors
        T, H = grad.shape[0], grad.shape[2]
        r, z = rz[..., :H], rz[..., H:]
        k_n = (1 - z) * (1 - n * n)  # d a_n = dh k_n
        k_z = (hs[:-1] - n) * z * (1 - z)  # d a_z = dh k_z
        k_r = hn * r * (1 - r)  # d a_r = d a_n k_r
        dgh = grad.new_empty(T, grad.shape[1], 3 * H)  # gradient of W_hh h + b_hh: [d a_r, d a_z, d a_n r]
        dan = torch.empty_like(grad)  # d a_n, also the gradient of x_n
        dh = grad[T - 1]
        for t in range(T - 1, -1, -1):
            torch.mul(dh, k_n[t], out=dan[t])
            torch.mul(dh, k_z[t], out=dgh[t, :, H : 2 * H])
            torch.mul(dan[t], k_r[t], out=dgh[t, :, :H])
            torch.mul(dan[t], r[t], out=dgh[t, :, 2 * H :])
            dh = (dh * z[t] if t == 0 else torch.addcmul(grad[t - 1], dh, z[t])).addmm_(dgh[t], w)
        dgx = dgh.clone()
        dgx[..., 2 * H :] = dan
        return dgx, dh, dgh.reshape(-1, 3 * H).t() @ hs[:-1].reshape(-1, H), dgh.sum((0, 1))
