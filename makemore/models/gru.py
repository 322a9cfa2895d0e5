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
        return GRUThroughTime.apply(gx, state[0], r.weight_hh_l0, r.bias_hh_l0)  # (T, B, H)


class GRUThroughTime(torch.autograd.Function):
    """The GRU above over T steps, with backpropagation through time written out.
    Why by hand: autograd through torch's kernel records a dozen nodes a position (bench/handwritten.py:
    1.53x a names gru step; tests/test_recurrent.py checks the gradients against torch's).

    Forward keeps r, z, n and W_hn h + b_hn of every step. Backward, from the last step to the
    first, with dh the gradient reaching h' = n + z (h - n):
      d a_n = dh (1 - z)(1 - n^2)            a_n = x_n + r (W_hn h + b_hn), n = tanh(a_n)
      d a_z = dh (h - n) z (1 - z)           d a_r = d a_n (W_hn h + b_hn) r (1 - r)
      dh_prev = dh z + [d a_r, d a_z, d a_n r] W_hh   (+ the loss's gradient at h_prev)
    The step-independent factors are computed for all steps at once; W_hh's and b_hh's gradients
    are one product and one sum over all steps. Forward adds r's and z's two biases for all steps
    up front and multiplies h by W_hh in two parts (r and z; n), each added in place to a buffer
    that already holds the rest of its sum; the loops walk per-step views made once by `unbind`,
    as the rnn's do."""

    @staticmethod
    def forward(ctx, gx, h0, w, b):  # gx: (T, B, 3H) = W_ih x + b_ih; h0: (B, H); w: W_hh (3H, H); b: b_hh (3H)
        T, H = gx.shape[0], h0.shape[1]
        hs = gx.new_empty(T + 1, *h0.shape)  # h_0 .. h_T
        rz = gx[..., : 2 * H] + b[: 2 * H]  # r, z: each starts as its inputs' share plus both biases
        n = torch.empty_like(hs[1:])
        hn = b[2 * H :].expand_as(n).clone()  # W_hn h + b_hn: starts as b_hn
        hs[0] = h0
        w_rz, w_n = w[: 2 * H].t(), w[2 * H :].t()
        h, rz_, n_, hn_ = hs.unbind(0), rz.unbind(0), n.unbind(0), hn.unbind(0)
        r_, z_ = rz[..., :H].unbind(0), rz[..., H:].unbind(0)
        for t, x_n_t in enumerate(gx[..., 2 * H :].unbind(0)):
            rz_[t].addmm_(h[t], w_rz).sigmoid_()
            hn_[t].addmm_(h[t], w_n)
            torch.addcmul(x_n_t, r_[t], hn_[t], out=n_[t]).tanh_()
            torch.lerp(n_[t], h[t], z_[t], out=h[t + 1])  # n + z (h - n)
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
        g, z_, r_, kn, kz, kr, dan_ = (x.unbind(0) for x in (grad, z, r, k_n, k_z, k_r, dan))
        dgh_, dr_, dz_, dn_ = (x.unbind(0) for x in (dgh, dgh[..., :H], dgh[..., H : 2 * H], dgh[..., 2 * H :]))
        dh = g[T - 1]
        for t in range(T - 1, -1, -1):
            torch.mul(dh, kn[t], out=dan_[t])
            torch.mul(dh, kz[t], out=dz_[t])
            torch.mul(dan_[t], kr[t], out=dr_[t])
            torch.mul(dan_[t], r_[t], out=dn_[t])
            dh = (dh * z_[t] if t == 0 else torch.addcmul(g[t - 1], dh, z_[t])).addmm_(dgh_[t], w)
        dgx = dgh.clone()
        dgx[..., 2 * H :] = dan
        return dgx, dh, dgh.reshape(-1, 3 * H).t() @ hs[:-1].reshape(-1, H), dgh.sum((0, 1))
