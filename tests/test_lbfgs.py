"""The batched L-BFGS on problems with known answers: it must find the minimum, and images in
one batch must not feel each other."""

from itertools import pairwise

import torch

from daemon.engine import lbfgs
from daemon.engine.lbfgs import BatchLBFGS


def _quadratic(scales: torch.Tensor, centre: torch.Tensor):
    """f(x) = sum scales * (x - centre)^2 per row: an ill-conditioned bowl (scales 1..1000)."""

    def evaluate(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        diff = x - centre
        return (scales * diff**2).sum(1), 2 * scales * diff

    return evaluate


def _minimise(evaluate, x: torch.Tensor, evaluations: int) -> BatchLBFGS:
    f, g = evaluate(x)
    optimizer = BatchLBFGS(x, f, g, history=10)
    for _ in range(evaluations):
        trial = optimizer.propose()
        optimizer.observe(trial, *evaluate(trial))
    return optimizer


def test_it_finds_the_minimum_of_an_ill_conditioned_bowl() -> None:
    scales = torch.logspace(0, 3, 50, dtype=torch.float64)[None]
    centre = torch.linspace(-5, 5, 50, dtype=torch.float64)[None]
    optimizer = _minimise(_quadratic(scales, centre), torch.zeros(1, 50, dtype=torch.float64), 300)
    assert torch.allclose(optimizer.x, centre, atol=1e-4)
    assert optimizer.f.item() < 1e-8


def test_it_gets_at_least_as_far_as_torchs_lbfgs_on_the_same_budget() -> None:
    """torch's L-BFGS with its strong-Wolfe line search is what this replaces."""
    scales = torch.logspace(0, 3, 50, dtype=torch.float64)
    centre = torch.linspace(-5, 5, 50, dtype=torch.float64)
    x = torch.zeros(50, dtype=torch.float64, requires_grad=True)
    reference = torch.optim.LBFGS(
        [x],
        max_iter=60,
        max_eval=60,
        history_size=10,
        line_search_fn="strong_wolfe",
        tolerance_grad=0,
        tolerance_change=0,
    )

    def closure() -> torch.Tensor:
        reference.zero_grad()
        loss = (scales * (x - centre) ** 2).sum()
        loss.backward()
        return loss

    reference.step(closure)
    theirs = (scales * (x.detach() - centre) ** 2).sum().item()
    ours = _minimise(_quadratic(scales[None], centre[None]), torch.zeros(1, 50).double(), 59)
    assert ours.f.item() <= theirs


def test_images_in_one_batch_take_the_steps_they_take_alone() -> None:
    generator = torch.Generator().manual_seed(0)
    scales = torch.logspace(0, 2, 20, dtype=torch.float64).repeat(3, 1)
    centre = torch.randn(3, 20, generator=generator, dtype=torch.float64)
    start = torch.randn(3, 20, generator=generator, dtype=torch.float64)
    together = _minimise(_quadratic(scales, centre), start, 15)
    for row in range(3):
        one = slice(row, row + 1)
        alone = _minimise(_quadratic(scales[one], centre[one]), start[one], 15)
        assert torch.allclose(together.x[row], alone.x[0], rtol=1e-12, atol=1e-12)


def test_an_image_left_out_of_an_evaluation_stays_where_it_is() -> None:
    scales, centre = torch.ones(2, 4, dtype=torch.float64), torch.ones(2, 4, dtype=torch.float64)
    evaluate = _quadratic(scales, centre)
    x = torch.zeros(2, 4, dtype=torch.float64)
    optimizer = BatchLBFGS(x, *evaluate(x), history=5)
    trial = optimizer.propose()
    f, g = evaluate(trial)
    f[1], g[1] = float("inf"), 0  # the second image has left the batch
    optimizer.observe(trial, f, g)
    assert torch.equal(optimizer.x[1], x[1])
    assert not torch.equal(optimizer.x[0], x[0])


def _two_loop(optimizer: BatchLBFGS, g: torch.Tensor) -> torch.Tensor:
    """-H g by Nocedal & Wright's two-loop recursion (algorithm 7.4) in float64, image by image,
    over the pairs in the optimiser's ring that the image uses, newest first."""
    history = optimizer.pairs.shape[1]
    newest_first = [(optimizer.slot - 1 - i) % history for i in range(optimizer.filled)]
    directions = []
    for image, q in enumerate(g.double()):
        used = [k for k in newest_first if optimizer.live[image, k]]
        pairs = [optimizer.pairs[image, k].double() for k in used]
        alphas = []
        for s, y in pairs:
            alphas.append((s @ q) / (s @ y))
            q = q - alphas[-1] * y
        r = optimizer.gamma[image].double() * q
        for (s, y), alpha in zip(reversed(pairs), reversed(alphas), strict=True):
            r = r + (alpha - (y @ r) / (s @ y)) * s
        directions.append(-r)
    return torch.stack(directions)


class _TwoLoop(BatchLBFGS):
    """The same optimiser with its direction from the two-loop recursion."""

    def _direction(self, g: torch.Tensor, new_pair=None) -> torch.Tensor:
        return _two_loop(self, g)


def _bumpy(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A convex objective whose curvature changes along the way, so every pair is different."""
    scales = torch.logspace(0, 2, x.shape[1], dtype=x.dtype)
    diff = x - torch.linspace(-2, 3, x.shape[1], dtype=x.dtype)
    return (scales * diff**2 + diff**4).sum(1), 2 * scales * diff + 4 * diff**3


def test_the_compact_direction_is_the_two_loop_recursions() -> None:
    """Through a wrapped ring (16 observations, 4 slots), rejected steps (zero pairs) in one
    image and a forgotten history in the other, the two optimisers take the same steps."""
    x = torch.randn(2, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    compact, reference = BatchLBFGS(x, *_bumpy(x), 4), _TwoLoop(x, *_bumpy(x), 4)
    for step in range(16):
        trial, written = compact.propose(), compact.slot
        torch.testing.assert_close(trial, reference.propose(), rtol=1e-10, atol=1e-12)
        f, g = _bumpy(trial)
        if step in (3, 9):
            f[0] = float("inf")  # image 0 left out: its slot gets a zero pair
        if step == 6:
            g[1] = 0  # no descent from there: image 1 forgets its history
        for optimizer in (compact, reference):
            optimizer.observe(trial, f.clone(), g.clone())
        torch.testing.assert_close(compact.d, reference.d, rtol=1e-10, atol=1e-12)
        if step in (3, 9):
            assert not compact.live[0, written] and not compact.pairs[0, written].any()
        if step == 6:
            assert not compact.live[1].any()
    assert (compact.f < _bumpy(x)[0] / 10).all()


def test_in_float32_it_is_as_close_to_the_exact_direction_as_float32_allows() -> None:
    """What the engine runs: float32 vectors, here on a problem whose curvature spans 1..100."""
    x = torch.zeros(1, 300)
    optimizer = BatchLBFGS(x, *_bumpy(x), 8)
    for _ in range(30):
        trial = optimizer.propose()
        optimizer.observe(trial, *_bumpy(trial))
    compact = optimizer._direction(optimizer.g)
    exact = _two_loop(optimizer, optimizer.g)
    assert (compact.double() - exact).norm() < 1e-5 * exact.norm()


def test_the_kept_products_are_those_of_the_pairs_in_the_ring() -> None:
    """S^T Y and Y^T Y are written a row and a column at a time: after the ring has wrapped they
    must still be the products of what the slots hold."""
    x = torch.zeros(2, 12, dtype=torch.float64)
    optimizer = BatchLBFGS(x, *_bumpy(x), 3)
    for _ in range(8):
        trial = optimizer.propose()
        optimizer.observe(trial, *_bumpy(trial))
    s, y = optimizer.pairs.unbind(2)
    torch.testing.assert_close(optimizer.sy, s @ y.mT, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(optimizer.yy, y @ y.mT, rtol=1e-12, atol=1e-12)


def test_reanchoring_takes_new_values_at_the_same_point_and_keeps_the_history() -> None:
    """The engine's switch from bf16 to fp32: the objective and gradient at the current point
    are replaced, the pairs stay, the next step is a unit step along the new direction; an
    image passed inf (it has left the batch) is left as it was."""
    x = torch.zeros(2, 12, dtype=torch.float64)
    optimizer = BatchLBFGS(x, *_bumpy(x), 4)
    for _ in range(6):
        trial = optimizer.propose()
        optimizer.observe(trial, *_bumpy(trial))
    pairs, before = optimizer.pairs.clone(), (optimizer.x.clone(), optimizer.d.clone())
    f, g = _bumpy(optimizer.x)
    f, g = f * 1.003, g * 1.01  # what a second arithmetic might give there
    f[1] = float("inf")
    optimizer.reanchor(f, g)
    assert torch.equal(optimizer.pairs, pairs) and torch.equal(optimizer.x, before[0])
    assert optimizer.f[0] == f[0] and torch.equal(optimizer.g[0], g[0])
    torch.testing.assert_close(optimizer.d[0], _two_loop(optimizer, g)[0], rtol=1e-10, atol=1e-12)
    assert optimizer.t[0] == 1 and torch.equal(optimizer.d[1], before[1][1])


def test_reanchoring_before_any_pair_steps_carefully_down_the_gradient() -> None:
    x = torch.zeros(1, 12, dtype=torch.float64)
    optimizer = BatchLBFGS(x, *_bumpy(x), 4)
    f, g = _bumpy(x)
    optimizer.reanchor(f, 2 * g)
    torch.testing.assert_close(optimizer.d, -2 * g)
    assert optimizer.t[0] == min(1.0, 1 / (2 * g).norm().item())


def test_no_trial_moves_a_pixel_farther_than_max_move() -> None:
    """A nearly flat bowl whose minimum is 10000 levels away: the unit step after the first
    pair would go all the way, where an image's pixels would clamp at 0 or 255 and the line
    search would spend evaluations coming back. Each trial stays within MAX_MOVE of its point,
    and the run still goes downhill the whole way."""
    scales = torch.full((1, 50), 1e-3, dtype=torch.float64)
    evaluate = _quadratic(scales, torch.full((1, 50), 1e4, dtype=torch.float64))
    x = torch.zeros(1, 50, dtype=torch.float64)
    optimizer = BatchLBFGS(x, *evaluate(x), history=10)
    values = [optimizer.f.item()]
    for _ in range(20):
        trial = optimizer.propose()
        assert (trial - optimizer.x).abs().max().item() <= lbfgs.MAX_MOVE * (1 + 1e-9)
        optimizer.observe(trial, *evaluate(trial))
        values.append(optimizer.f.item())
    assert all(later < earlier for earlier, later in pairwise(values))
    assert optimizer.x.min().item() >= 19 * lbfgs.MAX_MOVE - 1  # it kept moving at full stride
