"""Data-free calibration images: random 2-D iterated-function-system (IFS) fractals.

The data-free variant of Lazarevich et al. 2021 calibrates on synthetic fractal images; reference:
OpenVINO POT ``tools/pot/openvino/tools/pot/data_loaders/synthetic_image_loader.py``
(``IFSFunction``, ``SyntheticImageLoader``; after Kataoka et al.'s FractalDB):

- a *category* is a random IFS of 2-7 affine maps ``(x, y) -> (a x + b y + e, c x + d y + f)``
  with ``a..f ~ U(-1, 1)``, map ``i`` drawn with probability ``|a_i d_i - b_i c_i| / sum``;
- a category is accepted when its drawing fills at least 20 % of the pixels;
- every category gives several images by perturbing its parameters (POT: 25).

Decisions (the machine is offline and images here are small): images are generated at run time,
deterministically from the seed (``numpy.random.PCG64``), never downloaded; the chaos game runs
2,000 points for 100 steps (200k points per image, POT's count); points are drawn on a
``render`` x ``render`` canvas (64, or the input size if larger) as a 3x3 max-filtered hit map
(POT stamps random 3x3 patches), then area-resized to the model's input size. POT's colourisation
network (downloaded Caffe weights) is replaced by a random foreground and background colour per
image (grey levels for 1-channel inputs); POT's blur and +-30 degree rotation are not applied;
horizontal flips are (half the images).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["MIN_FILL", "fractal_images", "ifs_system", "render_ifs"]

#: a category is accepted when its drawing covers at least this fraction of the canvas
MIN_FILL = 0.2
_POINTS, _STEPS, _BURN_IN = 2000, 100, 10
_PERTURBATIONS = 25
_MAX_TRIES = 2000


def ifs_system(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random IFS: ``(params, probs)``, ``params`` ``(n, 6)`` = ``a b c d e f`` per map
    (``n`` in 2..7, entries ``U(-1, 1)``), ``probs`` ``(n,)`` proportional to ``|ad - bc|``,
    summing to 1."""
    n = int(rng.integers(2, 8))
    params = rng.uniform(-1.0, 1.0, size=(n, 6))
    return params, _probabilities(params)


def _probabilities(params: np.ndarray) -> np.ndarray:
    det = np.abs(params[:, 0] * params[:, 3] - params[:, 1] * params[:, 2])  # (n,)
    if not det.sum() > 0:
        return np.full(len(params), 1.0 / len(params))
    return det / det.sum()


def render_ifs(
    params: np.ndarray, probs: np.ndarray, size: int, rng: np.random.Generator
) -> np.ndarray | None:
    """The IFS drawn on a ``size`` x ``size`` canvas: float ``(size, size)`` in ``{0, 1}``, or
    ``None`` when the orbit is degenerate (non-finite or a single point)."""
    x = rng.uniform(-1.0, 1.0, size=(2, _POINTS))  # (2, P)
    xs = np.empty((2, _POINTS * (_STEPS - _BURN_IN)))
    cum = np.cumsum(probs)
    with np.errstate(all="ignore"):
        for step in range(_STEPS):
            pick = np.minimum(np.searchsorted(cum, rng.random(_POINTS)), len(probs) - 1)
            a, b, c, d, e, f = (params[pick, j] for j in range(6))  # each (P,)
            x = np.stack((a * x[0] + b * x[1] + e, c * x[0] + d * x[1] + f))
            if step >= _BURN_IN:
                k = step - _BURN_IN
                xs[:, k * _POINTS : (k + 1) * _POINTS] = x
    if not np.isfinite(xs).all():
        return None
    lo, hi = xs.min(axis=1, keepdims=True), xs.max(axis=1, keepdims=True)  # (2, 1)
    span = hi - lo
    if not (span > 1e-12).all() or not np.isfinite(span).all():
        return None
    pix = np.clip(((xs - lo) / span * (size - 1)).round().astype(np.int64), 0, size - 1)
    canvas = np.zeros((size, size))
    canvas[pix[1], pix[0]] = 1.0
    grown = F.max_pool2d(torch.from_numpy(canvas)[None, None], 3, stride=1, padding=1)
    return np.asarray(grown[0, 0].numpy())


def _category(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    for _ in range(_MAX_TRIES):
        params, probs = ifs_system(rng)
        canvas = render_ifs(params, probs, size, rng)
        if canvas is not None and canvas.mean() >= MIN_FILL:
            return params, probs
    raise RuntimeError(f"no IFS filled {MIN_FILL:.0%} of the canvas in {_MAX_TRIES} tries")


def fractal_images(n: int, shape: tuple[int, int, int], seed: int) -> Tensor:
    """``n`` fractal calibration images of ``shape`` ``(C, H, W)``, deterministic in ``seed``.

    Returns:
        ``(n, C, H, W)`` float32 in ``[0, 1]``. ``ceil(n / 25)`` accepted categories, 25 perturbed
        variants each (parameters ``+ U(-0.05, 0.05)``; a variant that fills less than 20 % is
        redrawn, after 50 failures the category's own parameters are used).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    channels, height, width = shape
    size = max(64, height, width)
    rng = np.random.Generator(np.random.PCG64(seed))
    images: list[Tensor] = []
    for _ in range(math.ceil(n / _PERTURBATIONS)):
        params, probs = _category(rng, size)
        for _ in range(min(_PERTURBATIONS, n - len(images))):
            images.append(_variant(params, probs, size, rng, channels, (height, width)))
    return torch.stack(images).float()


def _variant(
    params: np.ndarray,
    probs: np.ndarray,
    size: int,
    rng: np.random.Generator,
    channels: int,
    hw: tuple[int, int],
) -> Tensor:
    canvas = None
    for _ in range(50):
        moved = params + rng.uniform(-0.05, 0.05, size=params.shape)
        canvas = render_ifs(moved, _probabilities(moved), size, rng)
        if canvas is not None and canvas.mean() >= MIN_FILL:
            break
    else:
        canvas = render_ifs(params, probs, size, rng)
    assert canvas is not None
    if rng.random() < 0.5:
        canvas = canvas[:, ::-1]
    ink = torch.from_numpy(np.ascontiguousarray(canvas)).float()  # (size, size)
    small = F.interpolate(ink[None, None], size=hw, mode="area")[0]  # (1, H, W)
    fg = torch.from_numpy(rng.uniform(0.0, 1.0, size=channels)).float()[:, None, None]  # (C,1,1)
    bg = torch.from_numpy(rng.uniform(0.0, 1.0, size=channels)).float()[:, None, None]
    return (bg + (fg - bg) * small).clamp(0.0, 1.0)  # (C, H, W)
