"""The batched L-BFGS on problems with known answers: it must find the minimum, and images in
one batch must not feel each other."""

import torch

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
