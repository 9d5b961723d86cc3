"""L-BFGS for a batch of images at once, one history per image, every bit of state a tensor.

Why not torch.optim.LBFGS: it optimises one parameter set, and its two-loop recursion turns each
step size into a Python number, so one iteration waits for the GPU again and again: for photos
sharing a network pass those waits, not the network, set the pace (batching them through it made
them slower). Here a step is a fixed sequence of tensor operations for the whole batch, and the
caller decides when to look at the numbers.

The method is Nocedal & Wright's L-BFGS (algorithm 7.4, H0 = s.y / y.y) with a backtracking
Armijo line search: a step of 1 along the L-BFGS direction is tried first and shrunk by quadratic
interpolation while it does not lower the objective enough. It needs no extrapolation: the
Hessian scaling makes the unit step the right size after the first iteration. Against torch's
L-BFGS with its strong-Wolfe line search it ends level and is ahead early (DECISIONS.md, own
L-BFGS). The measured figures behind this module (how often torch's waits, what batching through
it cost, the compact form's speed) are in DECISIONS.md, not here: in a comment they go stale.

The direction is not the two-loop recursion, whose few small operations per stored pair are a
kernel launch each, so that their number grows with m, but the same matrix in compact form (Byrd,
Nocedal & Schnabel 1994, "Representations of quasi-Newton matrices and their use in limited
memory methods", Math. Programming 63, theorem 2.2 / eq. 2.6; Nocedal & Wright 2nd ed. 7.2):

    H = c I + [S  c Y] [[R^-T (D + c Y^T Y) R^-1, -R^-T], [-R^-1, 0]] [S^T; c Y^T]

with S, Y the m pairs (rows) oldest first, R the upper triangle of S^T Y with the diagonal, D
that diagonal, c the H0 scale. -H g is then one batched product of g and the history, two m x m
triangular solves per image and one product back: a whole `observe` is a fixed few dozen tensor
operations whatever m, and the history is read twice where the recursion read it four times
(faster on a CPU too: DECISIONS.md, compact L-BFGS). S^T Y and Y^T Y are kept from one
iteration to the next, a new pair's row and column written with it: the product that gives
S^T g and Y^T g gives them for two more columns, where recomputing them would be an
m x 2m x n product. The m x m algebra is in float64, a free precaution (~m^2 numbers an image)
as R's conditioning grows with the curvature's range: with float32 vectors the direction stays
within a few 1e-6 of the exact one (tests/test_lbfgs.py).
"""

from __future__ import annotations

import torch
from torch import Tensor

LBFGS_HISTORY = 100  # pairs kept per image: 2 x 100 image-sized vectors (see engine.memory)
ARMIJO = 1e-4  # sufficient decrease: f(x + t d) <= f(x) + ARMIJO t g.d
CURVATURE_EPSILON = 1e-10  # pairs with s.y below this would break positive definiteness
MAX_MOVE = 64.0  # levels of 255: no trial step moves any pixel farther (see _step_from)


class BatchLBFGS:
    """Minimises B independent objectives over flat (B, n) points: `propose` gives the points to
    evaluate next, `observe` takes the objectives and gradients found there.

    The history is a ring of `history` slots shared by the batch: every observation fills one
    slot for every image, with a zero pair where an image's step was rejected, so one slot index
    serves the whole batch instead of a gather per image. A slot an image does not use (a zero
    pair, or a history it forgot) is masked out of the small matrices: its row and column of R
    become the identity's, which decouples it exactly, as skipping it would in the recursion.
    """

    def __init__(self, x: Tensor, f: Tensor, g: Tensor, history: int) -> None:
        """`x` (B, n) the start, `f` (B,) and `g` (B, n) the objective and gradient there."""
        batch, n = x.shape
        self.x, self.f, self.g = x.clone(), f.double(), g.clone()
        # pairs[b, k] = (s, y) of slot k: interleaved so the first `filled` slots are one
        # (B, 2 filled, n) view, multiplied by a single bmm, and memory stays 2 m vectors an image.
        self.pairs = x.new_zeros(batch, history, 2, n)
        small = {"dtype": torch.float64, "device": x.device}
        self.sy = torch.zeros(batch, history, history, **small)  # s_i.y_j, slots in ring order
        self.yy = torch.zeros(batch, history, history, **small)  # y_i.y_j
        self.live = torch.zeros(batch, history, **small)  # 1 where the image uses the slot's pair
        # R's triangle as a mask, made once: triu's always-parallel loop stalls on a busy CPU
        # waiting for a thread another process holds, even at 10 x 10.
        self.upper = torch.ones(history, history, **small).triu()
        self.slot = 0  # the next slot to write, so the oldest once the ring is full
        self.filled = 0  # slots written so far, up to `history`: the rest are not multiplied
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
        s, y = torch.where(keep[:, None], s, 0), torch.where(keep[:, None], y, 0)
        written = self.slot
        self.pairs[:, written, 0] = s
        self.pairs[:, written, 1] = y
        self.live[:, written] = keep.double()
        self.gamma = torch.where(keep, sy / (y * y).sum(1).clamp_min(CURVATURE_EPSILON), self.gamma)
        self.slot = (written + 1) % self.live.shape[1]
        self.filled = min(self.filled + 1, self.live.shape[1])

        # Rejected: shrink the step to the minimum of the quadratic through f(x), g.d and f(trial).
        curvature = 2 * (f - self.f - self.gtd * self.t)
        shrunk = -self.gtd * self.t**2 / curvature.clamp_min(1e-300)
        shrunk = torch.minimum(torch.maximum(shrunk, 0.1 * self.t), 0.5 * self.t)

        self.x = torch.where(accept[:, None], trial, self.x)
        self.f = torch.where(accept, f, self.f)
        self.g = torch.where(accept[:, None], g, self.g)
        self._step_from(accept, self._direction(self.g, (written, s, y)), shrunk)

    def reanchor(self, f: Tensor, g: Tensor) -> None:
        """Objectives (B,) and gradients (B, n) at the current points, evaluated again in
        another arithmetic (bf16, then fp32 to finish): the next line search then compares
        values of one precision only, and the history is kept. An image passed f = inf (it has
        left the batch) keeps what it had."""
        fresh = torch.isfinite(f)
        self.f = torch.where(fresh, f.double(), self.f)
        self.g = torch.where(fresh[:, None], g, self.g)
        d = self._direction(self.g) if self.filled else -self.g
        self._step_from(fresh, d, self.t)

    def _step_from(self, moved: Tensor, d: Tensor, otherwise: Tensor) -> None:
        """For the images `moved` to a new point: the direction `d` from there (the gradient
        where `d` is no descent) and a unit step; the others keep theirs with the step
        `otherwise`."""
        gtd = (self.g * d).sum(1).double()
        # Not a descent direction (float noise, a stale history): forget and go down the gradient.
        lost = gtd >= 0
        self.live = torch.where(lost[:, None], 0, self.live)
        d = torch.where(lost[:, None], -self.g, d)
        gtd = torch.where(lost, -(self.g * self.g).sum(1).double(), gtd)
        fresh = torch.where(lost, _first_step(self.g), torch.ones_like(self.t))
        if not self.filled:  # no pair yet: a unit step along the gradient could overshoot
            fresh = _first_step(self.g)

        self.d = torch.where(moved[:, None], d, self.d)
        self.gtd = torch.where(moved, gtd, self.gtd)
        self.t = torch.where(moved, fresh, otherwise)
        # The points are images in levels of 255. The second direction's scale comes from the
        # first, unit-length step, whose curvature is barely measurable: its unit step can
        # move pixels by thousands of levels, every pixel then clamps, and the line search
        # spends evaluations shrinking it back (at each stage's start). No trial moves a pixel
        # more than MAX_MOVE levels (DECISIONS.md, coarse to fine: the trial step's bound).
        farthest = self.d.abs().amax(1).double().clamp_min(1e-300)
        self.t = torch.minimum(self.t, MAX_MOVE / farthest)

    def _direction(self, g: Tensor, new_pair: tuple[int, Tensor, Tensor] | None = None) -> Tensor:
        """-H g in compact form; with `new_pair` (slot, s, y), just written, its products are
        recorded first: one pass over the history gives both its row and column of S^T Y and
        Y^T Y and g's products."""
        batch, n = g.shape
        filled = self.filled
        history = self.pairs[:, :filled].view(batch, 2 * filled, n)
        rows = (g,) if new_pair is None else (*new_pair[1:], g)
        # (3, n) x (n, 2 filled) rather than the transpose: MKL's thin-matrix path is slower.
        products = torch.bmm(torch.stack(rows, 1), history.mT).double()
        by_slot = products.view(batch, len(rows), filled, 2)  # [b, s, y or g, i, s_i or y_i]
        if new_pair is not None:
            written = new_pair[0]
            self.sy[:, :filled, written] = by_slot[:, 1, :, 0]
            self.sy[:, written, :filled] = by_slot[:, 0, :, 1]
            self.yy[:, :filled, written] = by_slot[:, 1, :, 1]
            self.yy[:, written, :filled] = by_slot[:, 1, :, 1]

        # Ring order to oldest first, which R's triangle needs: slot `self.slot` is the oldest.
        oldest = self.slot % filled
        live = self.live[:, :filled]
        both = live[:, :, None] * live[:, None, :]
        sy = (self.sy[:, :filled, :filled] * both).roll((-oldest, -oldest), (1, 2))
        yy = (self.yy[:, :filled, :filled] * both).roll((-oldest, -oldest), (1, 2))
        sg, yg = (by_slot[:, -1] * live[:, :, None]).roll(-oldest, 1).unbind(2)
        gamma = self.gamma.double()[:, None, None]
        r = sy * self.upper[:filled, :filled] + torch.diag_embed(1 - live.roll(-oldest, 1))
        # H g = c g + S on_s - c Y v, v = R^-1 S^T g, on_s = R^-T ((D + c Y^T Y) v - c Y^T g).
        v = torch.linalg.solve_triangular(r, sg[:, :, None], upper=True)
        w = sy.diagonal(dim1=1, dim2=2)[:, :, None] * v + gamma * (yy @ v - yg[:, :, None])
        on_s = torch.linalg.solve_triangular(r.mT, w, upper=False)
        minus_weights = torch.cat((-on_s, gamma * v), 2).roll(oldest, 1).to(g.dtype)
        minus_h0g = (-self.gamma[:, None] * g)[:, None]
        return torch.baddbmm(minus_h0g, minus_weights.view(batch, 1, -1), history)[:, 0]


def _first_step(g: Tensor) -> Tensor:
    """min(1, 1 / |g|_2): a first step of unit length, which moves no pixel by more than one
    level of 255, so cannot overshoot whatever the objective's scale.

    Not torch's 1 / |g|_1: that shrinks with the number of pixels, and at 1024 px the decrease
    it asks for was below float32's resolution of the objective (~7e11): every trial was
    rejected and shrunk again, and the run stood still until the stopping rule ended it
    (DECISIONS.md, coarse to fine)."""
    return (1 / g.norm(dim=1).double()).clamp(max=1.0)
