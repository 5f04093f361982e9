"""The figures behind tests/test_attacks_apgd_agreement.py: native APGD-CE / APGD-T vs pyautoattack on
adversarially trained digits and MNIST models (the test's models, settings and seeds), as a table.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/apgd_agreement_test_size.py   # ~3 CPU-minutes
"""

import torch

from tests.test_attacks_apgd_agreement import SEEDS, STEPS, _mean_robust, digits_at, mnist_at

torch.set_num_threads(1)
settings = [
    ("apgd-ce", {"steps": STEPS, "restarts": 1}),
    ("apgd-ce", {"steps": STEPS, "restarts": 3}),
    ("apgd-t", {"steps": STEPS, "restarts": 1, "n_target_classes": 3}),
]
for label, fn in (
    ("digits, tiny CNN PGD-AT Linf 0.1", digits_at),
    ("MNIST, small CNN PGD-AT Linf 0.3", mnist_at),
):
    task = fn()
    model, x, y, eps = task
    with torch.no_grad():
        clean = float((model(x).argmax(1) == y).float().mean())
    print(
        f"\n{label}: {len(y)} images, clean {100 * clean:.2f} %, {STEPS} steps, mean of seeds {SEEDS}"
    )
    print("| attack | " + " | ".join(f"eps {e:g} native / pyautoattack (gap)" for e in eps) + " |")
    print("|---|" + "---|" * len(eps))
    for name, params in settings:
        a = _mean_robust(name, "native", params, task)
        b = _mean_robust(name, "autoattack", params, task)
        tag = f"{name} r{params['restarts']}" + (
            f" t{params['n_target_classes']}" if "n_target_classes" in params else ""
        )
        cells = [
            f"{100 * u:.2f} / {100 * v:.2f} ({100 * (u - v):+.2f})"
            for u, v in zip(a, b, strict=True)
        ]
        print(f"| {tag} | " + " | ".join(cells) + " |", flush=True)
