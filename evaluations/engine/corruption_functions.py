"""Hendrycks & Dietterich (2019) corruptions with the CIFAR-10-C parameters, on 32-px images.

The package ``imagecorruptions`` (import name of ``imagecorruptions-imaug``, the maintained 2026
fork of bethgelab's 1.1.2) hard-codes the ImageNet-C parameters, which are far harsher on 32 x 32
images than the CIFAR-10-C ones. Here each corruption whose CIFAR-10-C parameters differ is the
package's own formula (and its helpers: ``disk``, ``clipped_zoom``, ``plasma_fractal``,
``_motion_blur``, the glass-blur pixel shuffle) called with the per-severity values of
``make_cifar_c.py`` (hendrycks/robustness, ImageNet-C/create_c). Four corruptions (snow, frost,
elastic_transform, spatter) call the package unchanged, with its ImageNet parameters
(:data:`PACKAGE_PARAMETERS`): their CIFAR-10-C versions change more than one table of numbers.

Every function takes a uint8 image of shape (32.., 32.., 3) in [0, 255] and returns float values
of that shape in [0, 255] (the caller rounds). Randomness comes from NumPy's global generator
(the package's own convention); :mod:`evaluations.engine.corruptions` seeds it per image.
"""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["CIFAR10C_FUNCTIONS", "PACKAGE_PARAMETERS", "cifar10c_parameters"]

Array = np.ndarray

#: per-severity (1..5) parameters of make_cifar_c.py
_C: dict[str, list[Any]] = {
    "gaussian_noise": [0.04, 0.06, 0.08, 0.09, 0.10],
    "shot_noise": [500, 250, 100, 75, 50],
    "impulse_noise": [0.01, 0.02, 0.03, 0.05, 0.07],
    "speckle_noise": [0.06, 0.1, 0.12, 0.16, 0.2],
    "gaussian_blur": [0.4, 0.6, 0.7, 0.8, 1.0],
    "defocus_blur": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
    "glass_blur": [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],
    "motion_blur": [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)],
    "zoom_blur": [1.06, 1.11, 1.16, 1.21, 1.26],  # np.arange(1, end, 0.01)
    "fog": [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],
    "brightness": [0.05, 0.1, 0.15, 0.2, 0.3],
    "contrast": [0.75, 0.5, 0.4, 0.3, 0.15],
    "pixelate": [0.95, 0.9, 0.85, 0.75, 0.65],
    "jpeg_compression": [80, 65, 58, 50, 40],
    "saturate": [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)],
}

#: corruptions computed by the package unchanged (ImageNet-C parameters)
PACKAGE_PARAMETERS = frozenset({"snow", "frost", "elastic_transform", "spatter"})


def cifar10c_parameters(name: str, severity: int) -> object:
    """The CIFAR-10-C parameter of ``name`` at ``severity`` (1..5); KeyError for package ones."""
    return _C[name][severity - 1]


def _unit(x: Array) -> Array:
    return np.asarray(x, dtype=np.float64) / 255.0


def _gaussian_noise(x: Array, s: int) -> Array:
    c = float(_C["gaussian_noise"][s - 1])
    u = _unit(x)
    return np.clip(u + np.random.normal(size=u.shape, scale=c), 0, 1) * 255


def _shot_noise(x: Array, s: int) -> Array:
    c = float(_C["shot_noise"][s - 1])
    return np.clip(np.random.poisson(_unit(x) * c) / c, 0, 1) * 255


def _impulse_noise(x: Array, s: int) -> Array:
    import skimage as sk

    c = float(_C["impulse_noise"][s - 1])
    seed = int(np.random.randint(2**31 - 1))
    return np.clip(sk.util.random_noise(_unit(x), mode="s&p", rng=seed, amount=c), 0, 1) * 255


def _speckle_noise(x: Array, s: int) -> Array:
    c = float(_C["speckle_noise"][s - 1])
    u = _unit(x)
    return np.clip(u + u * np.random.normal(size=u.shape, scale=c), 0, 1) * 255


def _gaussian_blur(x: Array, s: int) -> Array:
    from skimage.filters import gaussian

    c = float(_C["gaussian_blur"][s - 1])
    return np.clip(gaussian(_unit(x), sigma=c, channel_axis=-1), 0, 1) * 255


def _glass_blur(x: Array, s: int) -> Array:
    from imagecorruptions.corruptions import _shuffle_pixels_njit_glass_blur
    from skimage.filters import gaussian

    c = _C["glass_blur"][s - 1]
    sigma = float(c[0])
    seed = int(np.random.randint(2**31 - 1))
    y = np.asarray(gaussian(_unit(x), sigma=sigma, channel_axis=-1) * 255, dtype=np.uint8)
    y = _shuffle_pixels_njit_glass_blur(y.shape[0], y.shape[1], y, c, seed)
    return np.clip(gaussian(y / 255.0, sigma=sigma, channel_axis=-1), 0, 1) * 255


def _defocus_blur(x: Array, s: int) -> Array:
    import cv2
    from imagecorruptions.corruptions import disk

    radius, alias = _C["defocus_blur"][s - 1]
    u = _unit(x).astype(np.float32)
    kernel = disk(radius=radius, alias_blur=alias)
    out = np.stack([cv2.filter2D(u[:, :, d], -1, kernel) for d in range(3)], axis=-1)
    return np.clip(out, 0, 1) * 255


def _motion_blur(x: Array, s: int) -> Array:
    from imagecorruptions.corruptions import _motion_blur as blur

    radius, sigma = _C["motion_blur"][s - 1]
    out = blur(np.asarray(x), radius=radius, sigma=sigma, angle=np.random.uniform(-45, 45))
    return np.clip(np.asarray(out, dtype=np.float64), 0, 255)


def _zoom_blur(x: Array, s: int) -> Array:
    from imagecorruptions.corruptions import clipped_zoom

    factors = np.arange(1, float(_C["zoom_blur"][s - 1]), 0.01)
    u = _unit(x).astype(np.float32)
    out = np.zeros_like(u)
    for z in factors:
        out += clipped_zoom(u, z)[: u.shape[0], : u.shape[1], :]
    return np.clip((u + out) / (len(factors) + 1), 0, 1) * 255


def _fog(x: Array, s: int) -> Array:
    from imagecorruptions.corruptions import next_power_of_2, plasma_fractal

    strength, decay = _C["fog"][s - 1]
    u = _unit(x)
    size = next_power_of_2(int(max(u.shape[:2])))
    top = u.max()
    u = (
        u
        + strength
        * plasma_fractal(mapsize=size, wibbledecay=decay)[: u.shape[0], : u.shape[1]][..., None]
    )
    return np.clip(u * top / (top + strength), 0, 1) * 255


def _hsv(x: Array, channel: int, scale: float, shift: float) -> Array:
    import skimage as sk

    hsv = sk.color.rgb2hsv(_unit(x))
    hsv[:, :, channel] = np.clip(hsv[:, :, channel] * scale + shift, 0, 1)
    return np.clip(sk.color.hsv2rgb(hsv), 0, 1) * 255


def _brightness(x: Array, s: int) -> Array:
    return _hsv(x, 2, 1.0, float(_C["brightness"][s - 1]))


def _saturate(x: Array, s: int) -> Array:
    scale, shift = _C["saturate"][s - 1]
    return _hsv(x, 1, float(scale), float(shift))


def _contrast(x: Array, s: int) -> Array:
    c = float(_C["contrast"][s - 1])
    u = _unit(x)
    means = u.mean(axis=(0, 1), keepdims=True)
    return np.clip((u - means) * c + means, 0, 1) * 255


def _jpeg_compression(x: Array, s: int) -> Array:
    buffer = BytesIO()
    Image.fromarray(np.asarray(x)).save(buffer, "JPEG", quality=int(_C["jpeg_compression"][s - 1]))
    return np.asarray(Image.open(buffer), dtype=np.float64)


def _pixelate(x: Array, s: int) -> Array:
    c = float(_C["pixelate"][s - 1])
    h, w = x.shape[:2]
    img = Image.fromarray(np.asarray(x)).resize((int(w * c), int(h * c)), Image.Resampling.BOX)
    return np.asarray(img.resize((w, h), Image.Resampling.BOX), dtype=np.float64)


#: name -> f(uint8 HxWx3 image, severity) -> float image in [0, 255], CIFAR-10-C parameters
CIFAR10C_FUNCTIONS: dict[str, Callable[[Array, int], Array]] = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise,
    "defocus_blur": _defocus_blur,
    "glass_blur": _glass_blur,
    "motion_blur": _motion_blur,
    "zoom_blur": _zoom_blur,
    "fog": _fog,
    "brightness": _brightness,
    "contrast": _contrast,
    "pixelate": _pixelate,
    "jpeg_compression": _jpeg_compression,
    "speckle_noise": _speckle_noise,
    "gaussian_blur": _gaussian_blur,
    "saturate": _saturate,
}
