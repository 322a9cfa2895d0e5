"""AdamW with gradient-norm clipping, the optimizer of the one training loop.

The same arithmetic as `torch.optim.AdamW(fused=True)` after `nn.utils.clip_grad_norm_` (the tests
compare them), on flat buffers: the optimizer lays all parameters end to end in one tensor, their
gradients in another, and points each parameter's `.data` and `.grad` at its slice. Backward
then accumulates into the flat gradient, the global norm is one reduction, the clipping is folded
into the update (the fused kernel divides the gradient by `grad_scale` as it reads it), and each
parameter group is one slice: one kernel call per group, however many tensors the model has.
Why by hand: per-tensor Python and launches are a large share of a small model's step (bench/handwritten.py:
1.10-1.13x a names transformer or mlp step against torch.optim.AdamW(fused=True) with clip_grad_norm_;
tests/test_optim.py compares the two), and building a torch.optim optimizer imports torch's compiler.

Per parameter group, one update (Loshchilov & Hutter 2019, algorithm 2):

    m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  t += 1
    p = p (1 - lr wd) - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)

`fused_step` runs torch's fused kernel (CPU and CUDA); elsewhere (MPS), and with a torch that lacks
the private `torch._fused_adamw_`, `plain_step` writes the update out. Code that re-points a
parameter (`model.to(device)`, `p.grad = None`) is caught at the next `zero_grad`, which lays the
buffers out again. `state_dict` has torch.optim's layout
(moments and step per parameter index, the groups' hyperparameters), which checkpoints store.
With `average` (a decay such as 0.999), the optimizer also keeps an exponential moving average
of the weights (Polyak & Juditsky 1992), one `lerp_` over the flat buffer per step:

    a = d a + (1 - d) p,  d = min(average, (1 + t) / (10 + t))

(the warm-up keeps the first steps from weighing the initial weights for long); `averaged()`
swaps it into the parameters for a while (an evaluation, a checkpoint). It is saved per
parameter as "average" beside the moments.

No AMSGrad, no maximise; all parameters on one device, of one dtype. One difference from
torch.optim: a parameter that gets no gradient in a step is updated with a zero gradient (its
moments decay, weight decay applies) where torch.optim skips it; every model here uses all its
parameters in every step.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch

HYPER = ("lr", "betas", "eps", "weight_decay")  # what a group holds beside its parameters


class AdamW:
    def __init__(self, groups: list[dict], lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 fused: bool = True, average: float = 0.0):
        """`groups`: dicts with "params" (lists of parameters) and "weight_decay"; `average`: the decay
        of the weights' moving average (0: none)."""
        self.param_groups = [{"params": list(g["params"]), "lr": lr, "betas": tuple(betas), "eps": eps,
                              "weight_decay": g["weight_decay"]} for g in groups]
        self.params = [p for g in self.param_groups for p in g["params"]]  # torch.optim's index order
        if len({(p.device, p.dtype) for p in self.params}) > 1:
            raise ValueError("AdamW needs all parameters on one device and of one dtype")
        self.fused = fused and hasattr(torch, "_fused_adamw_")  # a private API: without it, the written-out update
        self.spans = []  # (start, end) of each group in the flat buffers
        start = 0
        for g in self.param_groups:
            end = start + sum(p.numel() for p in g["params"])
            self.spans.append((start, end))
            start = end
        like = self.params[0] if self.params else torch.zeros(())
        self.data = like.new_empty(start)  # every parameter, end to end
        self.grad = like.new_zeros(start)  # their gradients
        self.exp_avg, self.exp_avg_sq = like.new_zeros(start), like.new_zeros(start)
        self.steps = [torch.zeros((), dtype=torch.float32, device=like.device) for _ in self.param_groups]
        self.average = average
        self.weight_average = None  # the weights' moving average, laid out like `data`
        self.lay_out()
        if average:
            self.weight_average = self.data.clone()

    def views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """`flat` cut into one tensor per parameter, shaped like it."""
        out, start = [], 0
        for p in self.params:
            out.append(flat[start : start + p.numel()].view_as(p))
            start += p.numel()
        return out

    def lay_out(self) -> None:
        """Copy the parameters (and any gradients) into the flat buffers and point them there; the
        buffers follow the parameters to another device."""
        device = self.params[0].device if self.params else self.data.device
        if self.data.device != device:
            self.data, self.grad, self.exp_avg, self.exp_avg_sq = (t.to(device) for t in (self.data, self.grad, self.exp_avg, self.exp_avg_sq))
            self.weight_average = None if self.weight_average is None else self.weight_average.to(device)
            self.steps = [t.to(device) for t in self.steps]
        self.data_views, self.grad_views = self.views(self.data), self.views(self.grad)
        with torch.no_grad():
            for p, d, g in zip(self.params, self.data_views, self.grad_views):
                d.copy_(p)
                if p.grad is None:
                    g.zero_()
                else:
                    g.copy_(p.grad)
                p.data, p.grad = d, g
        self.pointers = [p.data_ptr() for p in self.params]

    def zero_grad(self) -> None:
        if [p.data_ptr() for p in self.params] != self.pointers or any(p.grad is not g for p, g in zip(self.params, self.grad_views)):
            self.lay_out()  # something re-pointed a parameter or its gradient
        self.grad.zero_()

    def grad_norm(self) -> torch.Tensor:
        """The 2-norm of all gradients together (a 0-dim tensor)."""
        return torch.linalg.vector_norm(self.grad)

    def step(self, norm: torch.Tensor | None = None, max_norm: float = math.inf) -> None:
        """One update; with the gradients' `norm` above `max_norm`, the gradients are first scaled
        down to `max_norm` (clip_grad_norm_'s rule: by max_norm / (norm + 1e-6))."""
        scale = None
        if norm is not None and math.isfinite(max_norm):
            scale = torch.clamp((norm + 1e-6) / max_norm, min=1.0).to(torch.float32).to(self.data.device)  # 1 / clip coefficient
        for group, (a, b), t in zip(self.param_groups, self.spans, self.steps):
            if b > a:
                (self.fused_step if self.fused else self.plain_step)(group, slice(a, b), t, scale)
        if self.weight_average is not None:
            n = max(float(t) for t in self.steps)  # updates so far
            self.weight_average.lerp_(self.data, 1 - min(self.average, (1 + n) / (10 + n)))

    @contextmanager
    def averaged(self) -> Iterator[None]:
        """The parameters hold the weights' moving average inside the block (unchanged without one)."""
        if self.weight_average is None:
            yield
            return
        with torch.no_grad():
            live = self.data.clone()
            self.data.copy_(self.weight_average)
        try:
            yield
        finally:
            with torch.no_grad():
                self.data.copy_(live)

    def fused_step(self, group: dict, part: slice, t: torch.Tensor, scale: torch.Tensor | None) -> None:
        t += 1
        b1, b2 = group["betas"]
        torch._fused_adamw_([self.data[part]], [self.grad[part]], [self.exp_avg[part]], [self.exp_avg_sq[part]], [], [t],
                            amsgrad=False, lr=group["lr"], beta1=b1, beta2=b2, weight_decay=group["weight_decay"],
                            eps=group["eps"], maximize=False, grad_scale=scale, found_inf=None)

    @torch.no_grad()
    def plain_step(self, group: dict, part: slice, t: torch.Tensor, scale: torch.Tensor | None) -> None:
        lr, (b1, b2), eps = group["lr"], group["betas"], group["eps"]
        p, m, v = self.data[part], self.exp_avg[part], self.exp_avg_sq[part]
        g = self.grad[part] if scale is None else self.grad[part] / scale
        t += 1
        n = float(t)
        p.mul_(1 - lr * group["weight_decay"])
        m.lerp_(g, 1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        p.addcdiv_(m, (v.sqrt() / math.sqrt(1 - b2**n)).add_(eps), value=-lr / (1 - b1**n))

    def state_dict(self) -> dict:
        """torch.optim's layout: {"state": {index: {step, exp_avg, exp_avg_sq}}, "param_groups": [...]}
        (copies: the live buffers keep changing); with a moving average, each index also holds its "average"."""
        groups, state, i = [], {}, 0
        m, v = self.views(self.exp_avg), self.views(self.exp_avg_sq)
        a = None if self.weight_average is None else self.views(self.weight_average)
        for g, t in zip(self.param_groups, self.steps):
            groups.append({k: g[k] for k in HYPER} | {"params": list(range(i, i + len(g["params"])))})
            for _ in g["params"]:
                state[i] = {"step": t.clone(), "exp_avg": m[i].clone(), "exp_avg_sq": v[i].clone()}
                if a is not None:
                    state[i]["average"] = a[i].clone()
                i += 1
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, saved: dict) -> None:
        """Moments and hyperparameters from `state_dict()` (or torch.optim's, as older checkpoints hold);
        a ValueError when they do not fit these parameters. A saved average is taken when this optimizer
        keeps one (without one saved, its average starts from the current weights)."""
        if [len(g["params"]) for g in saved["param_groups"]] != [len(g["params"]) for g in self.param_groups]:
            raise ValueError("the optimizer's parameter groups do not match the model's")
        entries = {int(i): e for i, e in saved["state"].items()}
        if len(entries) not in (0, len(self.params)) or not set(entries) <= set(range(len(self.params))):
            raise ValueError("the optimizer's moments do not match the model's parameters")
        m, v = self.views(self.exp_avg), self.views(self.exp_avg_sq)
        a = None if self.weight_average is None else self.views(self.weight_average)
        i = 0
        for mine, theirs, t in zip(self.param_groups, saved["param_groups"], self.steps):
            mine.update({k: theirs[k] for k in HYPER} | {"betas": tuple(theirs["betas"])})
            for _ in mine["params"]:
                e = entries.get(i)
                if e is not None:
                    for k in ("exp_avg", "exp_avg_sq", "average"):
                        if k in e and e[k].shape != m[i].shape:
                            raise ValueError(f"optimizer {k} of shape {tuple(e[k].shape)} for a parameter of shape {tuple(m[i].shape)}")
                    m[i].copy_(e["exp_avg"])
                    v[i].copy_(e["exp_avg_sq"])
                    if a is not None and "average" in e:
                        a[i].copy_(e["average"])
                    t.fill_(float(e["step"]))
                i += 1
