"""Time overhead of each adversarial-training method over a standard training step (issue 12).

Same model (fresh copy per method, same seed), same batches, one process. A step of each method
is exactly what ``fit`` does per batch: standard = forward + backward + optimizer step; ``pgd`` /
``trades`` / ``fast`` = :func:`robustbench_sparse.adversarial.robust_loss` (crafting with BatchNorm
buffers restored, the clean no-grad pass for the statistics) + backward + step. Methods are
interleaved block by block (machine noise hits all alike); the ratio of medians to standard is
reported.

    OMP_NUM_THREADS=1 python benchmarks/adversarial_overhead.py [--steps 10] [--repeats 5]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from torch import nn

from robustbench_sparse.adversarial import AdversarialConfig, robust_loss
from robustbench_sparse.datasets import load_dataset
from robustbench_sparse.models import create_model_for


def _make(arch: str, info, seed: int) -> nn.Module:  # type: ignore[no-untyped-def]
    torch.manual_seed(seed)
    return create_model_for(arch, info)


def _block(model, opt, cfg, batches) -> float:  # type: ignore[no-untyped-def]
    model.train()
    t0 = time.perf_counter()
    for x, y in batches:
        opt.zero_grad(set_to_none=True)
        if cfg is None:
            loss = nn.functional.cross_entropy(model(x), y)
        else:
            loss = robust_loss(model, x, y, cfg, cfg.eps).loss
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / len(batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="small_cnn")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--adv-steps", type=int, default=10, help="PGD / TRADES steps")
    parser.add_argument("--steps", type=int, default=10, help="training steps per timed block")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved blocks per method")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    data = load_dataset(args.dataset, augment=False)
    loader = torch.utils.data.DataLoader(
        data.train,
        batch_size=args.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    batches = []
    for x, y in loader:
        if x.shape[0] == args.batch_size:
            batches.append((x, y))
        if len(batches) == args.steps:
            break
    methods: dict[str, AdversarialConfig | None] = {
        "standard": None,
        f"pgd-{args.adv_steps}": AdversarialConfig(
            method="pgd",
            eps=args.eps,
            steps=args.adv_steps,  # type: ignore[arg-type]
        ),
        f"trades-{args.adv_steps}": AdversarialConfig(
            method="trades",
            eps=args.eps,
            steps=args.adv_steps,  # type: ignore[arg-type]
        ),
        "fast (FGSM-RS)": AdversarialConfig(method="fast", eps=args.eps),  # type: ignore[arg-type]
    }
    models = {k: _make(args.arch, data.info, 0) for k in methods}
    opts = {k: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for k, m in models.items()}
    for k, cfg in methods.items():  # warm-up
        _block(models[k], opts[k], cfg, batches[:2])
    times: dict[str, list[float]] = {k: [] for k in methods}
    for _ in range(args.repeats):
        for k, cfg in methods.items():
            times[k].append(_block(models[k], opts[k], cfg, batches))
    base = statistics.median(times["standard"])
    print(
        f"{args.arch} on {args.dataset}, batch {args.batch_size}, eps {args.eps}, "
        f"{torch.get_num_threads()} thread(s), torch {torch.__version__}, {platform.machine()}"
    )
    print(f"{'method':<18} {'ms/step (median)':>17} {'x standard':>11}")
    for k in methods:
        med = statistics.median(times[k])
        print(f"{k:<18} {1000 * med:>17.1f} {med / base:>11.2f}")


if __name__ == "__main__":
    main()
