"""AdamW with gradient-norm clipping, the optimizer of the one training loop.

The same arithmetic as `torch.optim.AdamW(fused=True)` after `nn.utils.clip_grad_norm_` (the tests
compare them), done with fewer calls: the global gradient norm from one norm per tensor, and the
clipping folded into the update (the fused kernel divides each gradient by `grad_scale` as it
reads it). A small model's step is a few milliseconds, and torch.optim's per-step Python (group
bookkeeping, hooks) plus clip_grad_norm_ (a norm, a conversion and a multiplication per tensor)
were 10-20% of it; building a torch.optim optimizer also imports torch's compiler (1.1 s of every
`makemore train`). Per parameter group, one update (Loshchilov & Hutter 2019, algorithm 2):

    m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  t += 1
    p = p (1 - lr wd) - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)

`fused_step` runs torch's fused kernel (one pass per tensor, on CPU and CUDA); elsewhere (MPS)
`plain_step` writes the same update out. `state_dict` has torch.optim's layout (moments and step
per parameter index, groups' hyperparameters), which checkpoints store; no AMSGrad, no maximise.
"""

from __future__ import annotations

import math

import torch
from torch import nn

HYPER = ("lr", "betas", "eps", "weight_decay")  # what a group holds beside its parameters


class AdamW:
    def __init__(self, groups: list[dict], lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 fused: bool = True):
        """`groups`: dicts with "params" (lists of parameters) and "weight_decay"."""
        self.param_groups = [{"params": list(g["params"]), "lr": lr, "betas": tuple(betas), "eps": eps,
                              "weight_decay": g["weight_decay"]} for g in groups]
        self.params = [p for g in self.param_groups for p in g["params"]]  # torch.optim's index order
        self.fused = fused
        self.state: dict[nn.Parameter, dict[str, torch.Tensor]] = {}  # step, exp_avg, exp_avg_sq of each parameter

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def grad_norm(self) -> torch.Tensor:
        """The 2-norm of all gradients together (a 0-dim tensor)."""
        grads = [p.grad for p in self.params if p.grad is not None]
        if not grads:
            return torch.zeros(())
        return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))

    def step(self, norm: torch.Tensor | None = None, max_norm: float = math.inf) -> None:
        """One update; with the gradients' `norm` above `max_norm`, the gradients are first scaled
        down to `max_norm` (clip_grad_norm_'s rule: by max_norm / (norm + 1e-6))."""
        scale = None
        if norm is not None and math.isfinite(max_norm):
            scale = torch.clamp((norm + 1e-6) / max_norm, min=1.0).to(torch.float32)  # 1 / clip coefficient
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                (self.fused_step if self.fused else self.plain_step)(group, params, scale)

    def moments(self, params: list[nn.Parameter]) -> tuple[list, list, list]:
        for p in params:
            if p not in self.state:
                self.state[p] = {"step": torch.zeros((), dtype=torch.float32, device=p.device),
                                 "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                                 "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}
        states = [self.state[p] for p in params]
        return [s["step"] for s in states], [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states]

    def fused_step(self, group: dict, params: list, scale: torch.Tensor | None) -> None:
        steps, exp_avgs, exp_avg_sqs = self.moments(params)
        torch._foreach_add_(steps, 1)
        b1, b2 = group["betas"]
        torch._fused_adamw_(params, [p.grad for p in params], exp_avgs, exp_avg_sqs, [], steps, amsgrad=False,
                            lr=group["lr"], beta1=b1, beta2=b2, weight_decay=group["weight_decay"], eps=group["eps"],
                            maximize=False, grad_scale=None if scale is None else scale.to(params[0].device), found_inf=None)

    @torch.no_grad()
    def plain_step(self, group: dict, params: list, scale: torch.Tensor | None) -> None:
        steps, exp_avgs, exp_avg_sqs = self.moments(params)
        lr, (b1, b2), eps = group["lr"], group["betas"], group["eps"]
        for p, t, m, v in zip(params, steps, exp_avgs, exp_avg_sqs):
            g = p.grad if scale is None else p.grad / scale.to(p.device)
            t += 1
            p.mul_(1 - lr * group["weight_decay"])
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            n = float(t)
            denom = (v.sqrt() / math.sqrt(1 - b2**n)).add_(eps)
            p.addcdiv_(m, denom, value=-lr / (1 - b1**n))

    def state_dict(self) -> dict:
        """torch.optim's layout: {"state": {index: {step, exp_avg, exp_avg_sq}}, "param_groups": [...]}."""
        index = {p: i for i, p in enumerate(self.params)}
        groups, start = [], 0
        for g in self.param_groups:
            groups.append({k: g[k] for k in HYPER} | {"params": list(range(start, start + len(g["params"])))})
            start += len(g["params"])
        return {"state": {index[p]: dict(s) for p, s in self.state.items()}, "param_groups": groups}

    def load_state_dict(self, saved: dict) -> None:
        """Moments and hyperparameters from `state_dict()` (or torch.optim's, as older checkpoints hold);
        a ValueError when they do not fit these parameters."""
        if [len(g["params"]) for g in saved["param_groups"]] != [len(g["params"]) for g in self.param_groups]:
            raise ValueError("the optimizer's parameter groups do not match the model's")
        for mine, theirs in zip(self.param_groups, saved["param_groups"]):
            mine.update({k: theirs[k] for k in HYPER} | {"betas": tuple(theirs["betas"])})
        self.state = {}
        for i, entry in saved["state"].items():
            p = self.params[int(i)]
            if entry["exp_avg"].shape != p.shape or entry["exp_avg_sq"].shape != p.shape:
                raise ValueError(f"optimizer moments of shape {tuple(entry['exp_avg'].shape)} for a parameter of shape {tuple(p.shape)}")
            self.state[p] = {"step": entry["step"].to(torch.float32, copy=True).to(p.device),
                             "exp_avg": entry["exp_avg"].to(p.device, p.dtype, copy=True),
                             "exp_avg_sq": entry["exp_avg_sq"].to(p.device, p.dtype, copy=True)}
