"""Seconds per L-BFGS `observe` (which computes the next direction): the compact form in
daemon.engine.lbfgs against the two-loop recursion it replaced, side by side in one process.

    python -m bench.lbfgs_cost [--sides 256 512] [--histories 20 50 100] [--repeats 11]
                               [--device cpu] [--threads N]

For each photo size (long side, 4:3, RGB: n = 3 x side x 3/4 side) and history, both optimisers
first fill their history on a bowl (cheap to evaluate, and every pair is kept), then `observe`
is timed `repeats` times for each, alternating, so the two share the machine's load; on CUDA each
timing is bracketed by synchronisations. Also timed, on the compact optimiser's own full ring:
the products the direction takes of the history (g and the new pair, as kept incrementally)
against g alone plus S^T Y and Y^T Y recomputed with one bmm, which is what keeping them saves.
Printed and saved under bench/results/: the medians, the two-loop's over the compact form's,
and that ratio of the two best times (what each manages when the machine is least loaded).
On a CPU that other work shares, `--threads 1` tells more: a parallel region (MKL's gemm at
any size, torch's elementwise ops past 32768 elements) waits whole scheduler ticks for a
thread that another process holds, which can make a 0.4 ms product take 8 ms.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch import Tensor

from bench.report import save_report
from daemon.engine.lbfgs import CURVATURE_EPSILON, BatchLBFGS

REPO = Path(__file__).resolve().parents[1]
Objective = Callable[[Tensor], tuple[Tensor, Tensor]]


class TwoLoopLBFGS(BatchLBFGS):
    """The baseline: the same optimiser and ring with the direction of the two-loop recursion
    (Nocedal & Wright algorithm 7.4) that the compact form replaced: 1 / s.y kept per slot, as
    it was, and the pairs walked newest first, four vector operations each."""

    def __init__(self, x: Tensor, f: Tensor, g: Tensor, history: int) -> None:
        super().__init__(x, f, g, history)
        self.rho = x.new_zeros(x.shape[0], history)

    def _direction(self, g: Tensor, new_pair: tuple[int, Tensor, Tensor] | None = None) -> Tensor:
        if new_pair is not None:
            slot, s, y = new_pair
            self.rho[:, slot] = 1 / (s * y).sum(1).clamp_min(CURVATURE_EPSILON)
        rho = self.rho * self.live.to(self.rho.dtype)  # zero pairs and forgotten ones: 0
        q = g.clone()
        slots = [(self.slot - 1 - i) % self.live.shape[1] for i in range(self.filled)]
        alphas = []
        for k in slots:
            s_k, y_k = self.pairs[:, k].unbind(1)
            alpha = rho[:, k] * (s_k * q).sum(1)
            q -= alpha[:, None] * y_k
            alphas.append(alpha)
        r = q * self.gamma[:, None]
        for k, alpha in zip(reversed(slots), reversed(alphas), strict=True):
            s_k, y_k = self.pairs[:, k].unbind(1)
            beta = rho[:, k] * (y_k * r).sum(1)
            r += (alpha - beta)[:, None] * s_k
        return -r


def bowl(n: int, device: torch.device) -> Objective:
    """sum scales (x - centre)^2 with scales 1..1000: the pairs differ, and it costs ~nothing."""
    scales = torch.logspace(0, 3, n, device=device)[None]
    centre = torch.linspace(-50, 50, n, device=device)[None]

    def evaluate(x: Tensor) -> tuple[Tensor, Tensor]:
        diff = x - centre
        return (scales * diff**2).sum(1), 2 * scales * diff

    return evaluate


def seconds(work: Callable[[], object], device: torch.device) -> float:
    """Wall time of `work`, the device's queue drained before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def filled(
    kind: type[BatchLBFGS], evaluate: Objective, n: int, history: int, device: torch.device
) -> BatchLBFGS:
    """An optimiser of `kind` whose ring is full (every slot written once)."""
    x = torch.zeros(1, n, device=device)
    optimizer = kind(x, *evaluate(x), history)
    for _ in range(history):
        trial = optimizer.propose()
        optimizer.observe(trial, *evaluate(trial))
    return optimizer


def observe_seconds(
    optimizers: dict[str, BatchLBFGS], evaluate: Objective, repeats: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds of each optimiser's `observe`, `repeats` times, taking turns."""
    times: dict[str, list[float]] = {name: [] for name in optimizers}
    for _ in range(repeats):
        for name, optimizer in optimizers.items():
            trial = optimizer.propose()
            f, g = evaluate(trial)
            times[name].append(seconds(partial(optimizer.observe, trial, f, g), device))
    return times


def product_seconds(optimizer: BatchLBFGS, repeats: int, device: torch.device) -> dict[str, float]:
    """Median seconds of the history's products as `_direction` takes them (new pair and g in
    one bmm) and as they would be without S^T Y and Y^T Y kept (g alone, then both recomputed)."""
    batch, history, _, n = optimizer.pairs.shape
    pairs = optimizer.pairs.view(batch, 2 * history, n)
    columns = torch.randn(batch, 3, n, device=device)

    def recomputed() -> None:
        torch.bmm(columns[:, 2:], pairs.mT)
        torch.bmm(optimizer.pairs[:, :, 1], pairs.mT)

    kept = [seconds(lambda: torch.bmm(columns, pairs.mT), device) for _ in range(repeats)]
    again = [seconds(recomputed, device) for _ in range(repeats)]
    return {"kept_s": statistics.median(kept), "recomputed_s": statistics.median(again)}


def main() -> None:
    """Print and save, per size and history, both optimisers' seconds per observe."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sides", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--histories", type=int, nargs="+", default=[20, 50, 100])
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's own choice)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    print(
        f"{'side':>5} {'n':>7} {'m':>4}  median: {'two-loop':>9} {'compact':>9} {'ratio':>6}",
        end="",
    )
    print(f"  best: ratio  products: {'kept':>7} {'recomputed':>10}")
    for side in args.sides:
        n = 3 * side * (side * 3 // 4)
        evaluate = bowl(n, device)
        for history in args.histories:
            optimizers = {
                "two_loop": filled(TwoLoopLBFGS, evaluate, n, history, device),
                "compact": filled(BatchLBFGS, evaluate, n, history, device),
            }
            times = observe_seconds(optimizers, evaluate, args.repeats, device)
            row = {"side": side, "n": n, "history": history, "times": times}
            row |= {f"{name}_s": statistics.median(runs) for name, runs in times.items()}
            row["ratio"] = row["two_loop_s"] / row["compact_s"]
            row["best_ratio"] = min(times["two_loop"]) / min(times["compact"])
            row |= product_seconds(optimizers["compact"], args.repeats, device)
            rows.append(row)
            print(
                f"{side:5d} {n:7d} {history:4d}  {row['two_loop_s'] * 1e3:15.1f}ms "
                f"{row['compact_s'] * 1e3:7.1f}ms {row['ratio']:5.2f}x  {row['best_ratio']:9.2f}x "
                f"{row['kept_s'] * 1e3:14.1f}ms {row['recomputed_s'] * 1e3:8.1f}ms"
            )
            del optimizers
    report = {"device": str(device), "threads": torch.get_num_threads(), "repeats": args.repeats}
    report |= {"torch": torch.__version__, "rows": rows}
    print("saved", save_report(args.out, "lbfgs_cost", report))


if __name__ == "__main__":
    main()
