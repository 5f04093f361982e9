"""Randomized-smoothing certification throughput on digits (issue 28; not a timed test).

Builds the tests' ``small_cnn`` (width 0.5, untrained: the speed of a forward pass does not depend
on the weights) for the 8x8 digits and measures, on the same model and device:

* ``certify``: :func:`evaluations.engine.certify_smoothing.certify` on ``--examples`` test images
  at ``n0 + n`` noisy samples each, in noisy forward passes (samples) per second;
* ``plain``: a plain batched loop over the same number of samples: one input repeated
  ``batch_size`` times, ``+ sigma * randn``, forward, argmax, bincount; no per-example seeding,
  no statistics.

The ratio plain / certify is the overhead of the engine (goal: within 1.1x). ``--full`` then
certifies the whole digits test split (1,797 images; 449 with the product's 25 % test split)
through ``rbs certify`` at n = 10,000 and prints the wall time::

    OMP_NUM_THREADS=1 python benchmarks/certify_throughput.py --examples 20
    OMP_NUM_THREADS=1 python benchmarks/certify_throughput.py --examples 5 --repeats 1 --full --out /tmp/cert
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path

import torch

from evaluations.engine.certify_smoothing import SmoothingSettings, certify
from robustbench_sparse.data_roots import load_evaluation_split
from robustbench_sparse.datasets import dataset_info
from robustbench_sparse.models import create_model


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    info = dataset_info("digits")
    model = create_model(
        "small_cnn", num_classes=10, in_channels=1, mean=info.mean, std=info.std, width=0.5
    )
    return model.eval()


@torch.inference_mode()
def plain_loop(
    model: torch.nn.Module, x: torch.Tensor, per_example: int, batch: int, sigma: float
) -> None:
    """The baseline: the same samples, no machinery."""
    for xi in x:
        remaining = per_example
        while remaining > 0:
            m = min(batch, remaining)
            b = xi.unsqueeze(0).expand(m, *xi.shape)
            votes = model(b + sigma * torch.randn(b.shape)).argmax(1)
            torch.bincount(votes, minlength=10)
            remaining -= m


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=20)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--full", action="store_true", help="certify the whole test split too")
    parser.add_argument("--out", type=Path, default=Path("/tmp/certify-digits"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    test = load_evaluation_split("digits", {}, None, limit=args.examples, augment=False)
    x = torch.stack([test[i][0] for i in range(len(test))])  # type: ignore[arg-type]  # (N, 1, 8, 8)
    model = _model()
    settings = SmoothingSettings(sigma=args.sigma, n=args.n, batch_size=args.batch_size)
    samples = len(x) * (settings.n0 + settings.n)
    plain_loop(model, x[:1], 2000, args.batch_size, args.sigma)  # warm-up
    plain, ours = math.inf, math.inf
    for _ in range(args.repeats):  # interleaved, best of each: the machine is shared
        t0 = time.perf_counter()
        plain_loop(model, x, settings.n0, args.batch_size, args.sigma)
        plain_loop(model, x, settings.n, args.batch_size, args.sigma)
        plain = min(plain, time.perf_counter() - t0)
        t0 = time.perf_counter()
        certify(model, x, settings)
        ours = min(ours, time.perf_counter() - t0)
    print(f"{len(x)} examples x {settings.n0 + settings.n} samples = {samples}")
    print(f"plain loop: {samples / plain:,.0f} samples/s ({plain:.2f} s)")
    print(f"certify:    {samples / ours:,.0f} samples/s ({ours:.2f} s)")
    print(f"certify / plain time: {ours / plain:.3f}x")
    if args.full:
        from rbs.cli import main as rbs

        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' helpers
        from tests.eval_helpers import build_checkpoints

        ck = build_checkpoints(args.out / "ckpts")
        t0 = time.perf_counter()
        rbs(["-q", "certify", str(ck["dense"]), "--method", "smoothing", "--sigma",
             str(args.sigma), "--n", str(args.n), "--overwrite", "--out", str(args.out / "cert")])  # fmt: skip
        print(f"whole digits test split at n = {args.n}: {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
