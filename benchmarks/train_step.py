"""Campfire training-step overhead vs a dense step (issue: goal <= 1.05x).

Same model architecture, same data, one process. Dense and Campfire steps are interleaved block by
block (so machine noise hits both alike) and the ratio of medians is reported. The Campfire step
includes everything the trainer does: gradient-mask hooks, ``sparsifier.step`` (mask re-application,
optimizer-state zeroing) and the mask *updates*, which happen every ``update_every`` steps during the
ramp; two phases are measured: during the ramp (mask updates included) and after the masks froze.

    python benchmarks/train_step.py [--arch small_cnn] [--batch-size 64] [--repeats 7]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from torch import nn

from robustbench_sparse.datasets import load_dataset
from robustbench_sparse.models import create_model_for
from robustbench_sparse.sparsity import CampfireSparsifier, Granularity, SparsityConfig


def _make(arch: str, info, seed: int) -> nn.Module:  # type: ignore[no-untyped-def]
    torch.manual_seed(seed)
    return create_model_for(arch, info)


def _time_block(model, opt, sparsifier, batches, loss_fn) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    for x, y in batches:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        if sparsifier is not None:
            sparsifier.step(opt)
    return (time.perf_counter() - t0) / len(batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="small_cnn")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=40, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved blocks per phase")
    parser.add_argument("--update-every", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    data = load_dataset(args.dataset)
    g = torch.Generator().manual_seed(0)
    n = len(data.train)  # type: ignore[arg-type]
    xs = torch.stack([data.train[i][0] for i in range(n)])
    ys = torch.tensor([int(data.train[i][1]) for i in range(n)])

    def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
        idx = torch.randint(0, n, (args.steps, args.batch_size), generator=g)
        return [(xs[i], ys[i]) for i in idx]

    loss_fn = nn.CrossEntropyLoss()
    results: dict[str, list[float]] = {
        "dense-ramp": [],
        "ramp": [],
        "dense-frozen": [],
        "frozen": [],
    }
    total_steps = args.repeats * args.steps
    # Ramp covers the first phase; masks freeze at its end.
    cfg = SparsityConfig(
        target=0.7,
        granularity=Granularity.WINDOW,
        start=0.0,
        end=1.0,
        update_every=args.update_every,
    )
    dense = _make(args.arch, data.info, 0)
    sparse = _make(args.arch, data.info, 0)
    opt_d = torch.optim.SGD(dense.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    opt_s = torch.optim.SGD(sparse.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    sp = CampfireSparsifier(cfg, steps_per_epoch=total_steps)
    sp.prepare(sparse)
    dense.train()
    sparse.train()
    # Warm-up (allocator, kernels).
    _time_block(dense, opt_d, None, batches()[:5], loss_fn)
    for phase in ("ramp", "frozen"):
        for _ in range(args.repeats):
            b = batches()
            results[f"dense-{phase}"].append(_time_block(dense, opt_d, None, b, loss_fn))
            results[phase].append(_time_block(sparse, opt_s, sp, b, loss_fn))
        if phase == "ramp":
            while not sp.frozen:  # finish the schedule so the second phase is post-freeze
                sp.step(opt_s)
    med = {k: statistics.median(v) for k, v in results.items()}
    print(
        f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"
    )
    print(f"model: {args.arch} on {args.dataset}, batch {args.batch_size}, SGD momentum + wd")
    for phase in ("ramp", "frozen"):
        d, c = med[f"dense-{phase}"], med[phase]
        print(
            f"{phase:>6}: dense {d * 1e3:7.2f} ms, Campfire {c * 1e3:7.2f} ms, "
            f"ratio of medians {c / d:.3f}x"
        )
    print(f"(mask update every {args.update_every} steps during the ramp)")
    print(f"final sparsity {sp.current_sparsity:.3f}")


if __name__ == "__main__":
    main()
