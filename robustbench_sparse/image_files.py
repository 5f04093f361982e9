"""Image files of an ImageFolder tree: which entries count, and their pixels scaled to ``[0, 1]``.

- **Hidden entries** (a name starting with ``.``: ``.ipynb_checkpoints/``, ``.DS_Store``,
  ``._cat.png`` of macOS archives) are neither classes nor images, at any depth: :func:`is_hidden`
  decides it for the class list, the image list and the size survey alike, so the class count and
  the labels always agree.
- **Bit depth**: ``torchvision``'s loader converts every image to 8-bit RGB, which *clips* a 16-bit
  grayscale image (Pillow mode ``I;16``) at 255 instead of scaling it. :func:`read_image` scales
  by the depth the file declares: 8-bit modes (``1``, ``L``, ``LA``, ``P``, ``PA``, ``RGB``,
  ``RGBA``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``, ...) through Pillow's own conversion to RGB
  (alpha dropped, as torchvision does), 16-bit modes (``I;16``, ``I;16L``, ``I;16B``) by
  ``2**bits - 1`` (TIFF's BitsPerSample when it says 12 bits, say), 32-bit integers (``I``) when
  the format fixes their range (PNG/PGM/PPM: 16-bit; TIFF: BitsPerSample) and floats (``F``) when
  they lie in ``[0, 1]``. Anything else is refused in one line naming the file.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustbench_sparse.errors import UserError

__all__ = ["IMAGE_EXTENSIONS", "image_dataset", "is_hidden", "is_image_file", "read_image"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
"""torchvision.datasets.folder.IMG_EXTENSIONS: the files an ImageFolder reads."""

_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_TIFF_BITS_PER_SAMPLE = 258
# Formats whose 32-bit integer ("I") images hold 16-bit samples: Pillow reads 16-bit PNG (older
# versions) and PGM/PPM (any maxval, rescaled to 65535) into mode I.
_SIXTEEN_BIT_IN_I = ("PNG", "PPM")


def is_hidden(path: str | Path, root: str | Path) -> bool:
    """True when any part of ``path`` below ``root`` starts with ``.`` (hidden folder or file)."""
    rel = Path(os.path.relpath(path, root))
    return any(part.startswith(".") and part not in (".", "..") for part in rel.parts)


def is_image_file(path: str | Path, root: str | Path) -> bool:
    """An image an ImageFolder under ``root`` reads: a known extension and nothing hidden on the way."""
    return str(path).lower().endswith(IMAGE_EXTENSIONS) and not is_hidden(path, root)


def _declared_bits(img: Any, default: int) -> int:
    """Bits per sample a TIFF declares (12 for 12-bit scans), else ``default``."""
    tags = getattr(img, "tag_v2", None)
    value = tags.get(_TIFF_BITS_PER_SAMPLE) if tags is not None else None
    if isinstance(value, tuple | list):
        value = value[0] if value else None
    return int(value) if isinstance(value, int) and 0 < value <= 32 else default


def _scaled(img: Any, path: Path) -> torch.Tensor:
    """A single-channel high-depth image -> float32 ``(3, H, W)`` in ``[0, 1]`` (grey in RGB)."""
    mode = img.mode
    pixels = np.asarray(img).astype(np.float64)  # (H, W)
    if mode == "F":
        low, high = float(pixels.min(initial=0.0)), float(pixels.max(initial=0.0))
        if not (np.isfinite(pixels).all() and low >= 0.0 and high <= 1.0):
            raise UserError(
                f"{path}: a floating-point image with values in [{low:.4g}, {high:.4g}], not "
                "[0, 1]; save it as an 8- or 16-bit image"
            )
        scale = 1.0
    else:
        if mode in _SIXTEEN_BIT:
            bits = _declared_bits(img, 16)
        elif img.format == "TIFF":
            bits = _declared_bits(img, 32)
        elif img.format in _SIXTEEN_BIT_IN_I:
            bits = 16
        else:
            raise UserError(
                f"{path}: a 32-bit integer image ({img.format}) of unknown range; save it as "
                "an 8- or 16-bit image"
            )
        scale = float(2**bits - 1)
        low, high = float(pixels.min(initial=0)), float(pixels.max(initial=0))
        if low < 0 or high > scale:
            raise UserError(
                f"{path}: pixel values {low:.0f}..{high:.0f} do not fit its {bits}-bit depth; "
                "re-save the image"
            )
    grey = torch.from_numpy(pixels / scale).to(torch.float32)  # (H, W) in [0, 1]
    return grey.unsqueeze(0).expand(3, -1, -1).contiguous()  # (3, H, W)


def read_image(path: str | Path) -> Any:
    """The image at ``path`` as a ``PIL.Image`` in mode ``RGB``, or a float32 ``(3, H, W)`` tensor.

    8-bit images come back as RGB PIL images (the transforms' usual input); 16-bit, 32-bit integer
    and floating-point images as tensors already scaled to ``[0, 1]`` (see the module docstring).

    Raises:
        UserError: an unreadable file, a mode Pillow cannot convert to RGB, or values outside the
            range the file's depth allows (one line naming the file).
    """
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    try:
        with Image.open(p) as img:
            img.load()
            if img.mode == "F" or img.mode == "I" or img.mode in _SIXTEEN_BIT:
                return _scaled(img, p)
            if img.mode.startswith("I;"):  # I;16S, I;32, ...: no depth we can vouch for
                raise UserError(
                    f"{p}: image mode {img.mode!r} is not supported; save it as an 8- or 16-bit "
                    "image"
                )
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise UserError(f"{p} is not a readable image ({exc})") from None


def image_dataset(
    folder: str | Path, transform: Callable[[Any], torch.Tensor]
) -> torch.utils.data.Dataset[Any]:
    """``torchvision.datasets.ImageFolder`` over ``folder`` without its hidden entries.

    Classes are the visible sub-folders (sorted; label = index), images the files with an image
    extension and no hidden part in their path, read by :func:`read_image` and passed to
    ``transform``. Items: ``(transform(image), label)``.

    Raises:
        UserError: no visible class folder, or a class folder without any image.
    """
    from robustbench_sparse.visible_image_folder import VisibleImageFolder

    root = Path(folder)
    try:
        return VisibleImageFolder(  # type: ignore[no-any-return]
            str(root),
            transform=transform,
            loader=read_image,
            is_valid_file=functools.partial(is_image_file, root=root),
        )
    except (FileNotFoundError, RuntimeError) as exc:
        raise UserError(f"imagefolder dataset at {root} is unusable: {exc}") from None
