"""Common corruptions of a test split and the accuracy of each checkpoint under them.

The 15 corruptions of Hendrycks & Dietterich (ICLR 2019, "Benchmarking neural network robustness
to common corruptions and perturbations") at severities 1-5, plus the 4 held-out ones
(speckle_noise, gaussian_blur, spatter, saturate) on request. The images are **generated** here
(:mod:`evaluations.engine.corruption_functions`: the ``imagecorruptions`` package's formulas with
the CIFAR-10-C parameters, four corruptions with the package's ImageNet ones), seeded per image;
they are not the published CIFAR-10-C files, so no number is a RobustBench corruptions-track
figure.

Images smaller than 32 px (8-px digits, 28-px MNIST: the package refuses them) are upsampled to
32 x 32 (bilinear), corrupted there, and reduced back (box filter): blur radii refer to the 32-px
image. Grayscale images are corrupted as 3 equal channels and averaged back. A corruption that
raises at an image size is skipped with one log line and recorded (:class:`CorruptionOutcome`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from torch import nn

from evaluations.engine.corruption_functions import CIFAR10C_FUNCTIONS, PACKAGE_PARAMETERS
from robustbench_sparse.errors import UserError

__all__ = [
    "COMMON",
    "EXTRA",
    "SEVERITIES",
    "CorruptionOutcome",
    "corrupt_batch",
    "corruption_names",
    "evaluate_corruptions",
    "parameter_source",
]

logger = logging.getLogger(__name__)

#: the 15 test corruptions, in the paper's order (noise, blur, weather, digital)
COMMON = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
#: the 4 held-out ("validation") corruptions
EXTRA = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
SEVERITIES = (1, 2, 3, 4, 5)
_MIN_SIDE = 32  # the package refuses smaller images


def corruption_names(names: Sequence[str] | None = None, *, extra: bool = False) -> list[str]:
    """The corruptions to run: ``names`` checked (UserError naming the valid ones), else the 15
    (plus the 4 held-out ones with ``extra``)."""
    valid = COMMON + EXTRA
    if names:
        unknown = [n for n in names if n not in valid]
        if unknown:
            raise UserError(f"unknown corruption {unknown[0]!r}; choose from: {', '.join(valid)}")
        return list(dict.fromkeys(names))
    return list(COMMON + EXTRA) if extra else list(COMMON)


def parameter_source(name: str) -> str:
    """``"cifar10-c"`` (make_cifar_c.py values) or ``"imagenet-c"`` (the package's own)."""
    return "imagenet-c" if name in PACKAGE_PARAMETERS else "cifar10-c"


def _corrupt_hwc(image: np.ndarray, name: str, severity: int) -> np.ndarray:
    """uint8 (H, W, 3), H, W >= 32 -> corrupted float (H, W, 3) in [0, 255]."""
    if name in PACKAGE_PARAMETERS:
        from imagecorruptions import corrupt

        return np.asarray(corrupt(image, severity=severity, corruption_name=name), np.float64)
    return CIFAR10C_FUNCTIONS[name](image, severity)


def _image_seed(seed: int, name: str, severity: int, index: int) -> int:
    key = (COMMON + EXTRA).index(name)
    return int(np.random.SeedSequence([seed, key, severity, index]).generate_state(1)[0])


def corrupt_batch(
    x: torch.Tensor, name: str, severity: int, *, seed: int, first_index: int = 0
) -> torch.Tensor:
    """Corrupt a batch of images.

    Args:
        x: (N, C, H, W) float, pixel scale [0, 1], C in {1, 3}.
        name: a corruption of :data:`COMMON` or :data:`EXTRA`.
        severity: 1..5.
        seed: the run's seed; image ``first_index + i`` gets its own stream derived from
            (seed, corruption, severity, index), so a batch split does not change the images.

    Returns:
        (N, C, H, W), the dtype of ``x``, values in [0, 1] (8-bit quantised, like the package).

    Raises:
        ValueError: a channel count other than 1 or 3, or a severity outside 1..5.
        Exception: whatever the corruption raises at this image size (callers skip it).
    """
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be 1..5, got {severity}")
    n, c, h, w = x.shape
    if c not in (1, 3):
        raise ValueError(f"corruptions need 1 or 3 channels, got {c}")
    pixels = (x.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    hwc = pixels.permute(0, 2, 3, 1).numpy()  # (N, H, W, C)
    side = (max(h, _MIN_SIDE), max(w, _MIN_SIDE))
    out = np.empty((n, h, w, c), dtype=np.float64)
    state = np.random.get_state()
    try:
        for i in range(n):
            img = hwc[i] if c == 3 else np.repeat(hwc[i], 3, axis=2)  # (H, W, 3)
            if (h, w) != side:  # (H, W, 3) -> (32, 32, 3)
                img = np.asarray(Image.fromarray(img).resize(side[::-1], Image.Resampling.BILINEAR))
            np.random.seed(_image_seed(seed, name, severity, first_index + i) % 2**32)
            y = np.clip(_corrupt_hwc(img, name, severity), 0, 255).astype(np.uint8)
            if (h, w) != side:  # (32, 32, 3) -> (H, W, 3)
                y = np.asarray(Image.fromarray(y).resize((w, h), Image.Resampling.BOX))
            out[i] = y if c == 3 else y.astype(np.float64).mean(axis=2, keepdims=True)
    finally:
        np.random.set_state(state)
    result = torch.from_numpy(np.round(out) / 255.0).permute(0, 3, 1, 2)  # (N, C, H, W)
    return result.to(dtype=x.dtype).contiguous()


@dataclass
class CorruptionOutcome:
    """One checkpoint's accuracy under each corruption and severity.

    ``rows``: dicts with ``corruption, severity, n, correct, seconds, parameters``;
    ``skipped``: corruption -> the one-line reason it could not be computed.
    """

    clean_correct: int
    n: int
    rows: list[dict[str, object]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


@torch.no_grad()
def _correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> int:
    return int((model(x.to(device)).argmax(1).cpu() == y).sum())


def evaluate_corruptions(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    names: Sequence[str],
    *,
    severities: Sequence[int] = SEVERITIES,
    seed: int = 0,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
) -> CorruptionOutcome:
    """Accuracy of ``model`` (eval mode) on ``x`` (N, C, H, W in [0, 1]), labels ``y`` (N,), under
    each corruption x severity; a corruption that fails at this size is skipped and recorded."""
    dev = torch.device(device)
    model.eval()
    n = len(y)
    batches = [(i, slice(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
    out = CorruptionOutcome(sum(_correct(model, x[s], y[s], dev) for _, s in batches), n)
    for name in names:
        rows = []
        try:
            for severity in severities:
                t0 = time.perf_counter()
                correct = 0
                for start, s in batches:
                    xc = corrupt_batch(x[s], name, severity, seed=seed, first_index=start)
                    correct += _correct(model, xc, y[s], dev)
                rows.append(
                    {
                        "corruption": name,
                        "severity": severity,
                        "n": n,
                        "correct": correct,
                        "seconds": time.perf_counter() - t0,
                        "parameters": parameter_source(name),
                    }
                )
        except Exception as exc:
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            logger.warning(
                "corruption %s skipped at %dx%d: %s", name, x.shape[2], x.shape[3], reason
            )
            out.skipped[name] = reason
            continue
        out.rows.extend(rows)
    return out
