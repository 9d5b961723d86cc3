"""L-BFGS for a batch of images at once, one history per image, every bit of state a tensor.

Why not torch.optim.LBFGS: it optimises one parameter set, and its two-loop recursion turns each
step size into a Python number, so one iteration waits for the GPU about 200 times: for photos
sharing a network pass those waits, not the network, set the pace (batching them made them slower
on an H200). Here a step is a fixed sequence of tensor operations for the whole batch, and the
caller decides when to look at the numbers.

The method is Nocedal & Wright's L-BFGS (algorithm 7.4, two-loop recursion, H0 = s.y / y.y)
with a backtracking Armijo line search: a step of 1 along the L-BFGS direction is tried first
and shrunk by quadratic interpolation while it does not lower the objective enough. It needs no
extrapolation: the Hessian scaling makes the unit step the right size after the first iteration.
Against torch's L-BFGS with its strong-Wolfe line search it ends level and is ahead early
(DECISIONS.md, own L-BFGS).
"""

from __future__ import annotations

import torch
from torch import Tensor

LBFGS_HISTORY = 100  # pairs kept per image: 2 x 100 image-sized vectors (see engine.memory)
ARMIJO = 1e-4  # sufficient decrease: f(x + t d) <= f(x) + ARMIJO t g.d
CURVATURE_EPSILON = 1e-10  # pairs with s.y below this would break positive definiteness


class BatchLBFGS:
    """Minimises B independent objectives over flat (B, n) points: `propose` gives the points to
    evaluate next, `observe` takes the objectives and gradients found there.

    The history is a ring of `history` slots shared by the batch: every observation fills one
    slot for every image, with a zero pair (a no-op in the recursion) where an image's step was
    rejected, so the recursion walks slots by plain index instead of gathering per image.
    """

    def __init__(self, x: Tensor, f: Tensor, g: Tensor, history: int) -> None:
        """`x` (B, n) the start, `f` (B,) and `g` (B, n) the objective and gradient there."""
        batch, n = x.shape
        self.x, self.f, self.g = x.clone(), f.double(), g.clone()
        self.s = x.new_zeros(history, batch, n)
        self.y = x.new_zeros(history, batch, n)
        self.rho = x.new_zeros(history, batch)
        self.slot = 0
        self.filled = 0  # slots written so far, up to `history`: the recursion skips the rest
        self.gamma = x.new_ones(batch)  # H0 scale, from each image's newest pair
        self.d = -g
        self.t = _first_step(g)
        self.gtd = (g * self.d).sum(1).double()

    def propose(self) -> Tensor:
        """The next points to evaluate, (B, n)."""
        return self.x + self.t.to(self.x.dtype)[:, None] * self.d

    def observe(self, trial: Tensor, f: Tensor, g: Tensor) -> None:
        """Objectives (B,) and gradients (B, n) at `trial` (what `propose` gave); an image left
        out of the evaluation is passed f = inf: its step is rejected and nothing else moves."""
        f = f.double()
        accept = f <= self.f + ARMIJO * self.t * self.gtd
        s, y = trial - self.x, g - self.g
        sy = (s * y).sum(1)
        keep = accept & (sy > CURVATURE_EPSILON)
        self.s[self.slot] = torch.where(keep[:, None], s, 0)
        self.y[self.slot] = torch.where(keep[:, None], y, 0)
        self.rho[self.slot] = torch.where(keep, 1 / sy.clamp_min(CURVATURE_EPSILON), 0)
        self.gamma = torch.where(keep, sy / (y * y).sum(1).clamp_min(CURVATURE_EPSILON), self.gamma)
        self.slot = (self.slot + 1) % len(self.rho)
        self.filled = min(self.filled + 1, len(self.rho))

        # Rejected: shrink the step to the minimum of the quadratic through f(x), g.d and f(trial).
        curvature = 2 * (f - self.f - self.gtd * self.t)
        shrunk = -self.gtd * self.t**2 / curvature.clamp_min(1e-300)
        shrunk = torch.minimum(torch.maximum(shrunk, 0.1 * self.t), 0.5 * self.t)

        self.x = torch.where(accept[:, None], trial, self.x)
        self.f = torch.where(accept, f, self.f)
        self.g = torch.where(accept[:, None], g, self.g)
        d = self._direction(self.g)
        gtd = (self.g * d).sum(1).double()
        # Not a descent direction (float noise, a stale history): forget and go down the gradient.
        lost = gtd >= 0
        self.rho = torch.where(lost, 0, self.rho)
        d = torch.where(lost[:, None], -self.g, d)
        gtd = torch.where(lost, -(self.g * self.g).sum(1).double(), gtd)
        fresh = torch.where(lost, _first_step(self.g), torch.ones_like(self.t))

        self.d = torch.where(accept[:, None], d, self.d)
        self.gtd = torch.where(accept, gtd, self.gtd)
        self.t = torch.where(accept, fresh, shrunk)

    def _direction(self, g: Tensor) -> Tensor:
        """-H g by the two-loop recursion, newest pair first."""
        q = g.clone()
        slots = [(self.slot - 1 - i) % len(self.rho) for i in range(self.filled)]
        alphas = []
        for k in slots:
            alpha = self.rho[k] * (self.s[k] * q).sum(1)
            q -= alpha[:, None] * self.y[k]
            alphas.append(alpha)
        r = q * self.gamma[:, None]
        for k, alpha in zip(reversed(slots), reversed(alphas), strict=True):
            beta = self.rho[k] * (self.y[k] * r).sum(1)
            r += (alpha - beta)[:, None] * self.s[k]
        return -r


def _first_step(g: Tensor) -> Tensor:
    """min(1, 1 / |g|_1): a first step that cannot overshoot whatever the objective's scale
    (torch's L-BFGS starts the same way)."""
    return (1 / g.abs().sum(1).double()).clamp(max=1.0)
