"""image_files: hidden entries are neither classes nor images; every bit depth scaled to [0, 1].

Issue 29 items 6 and 7: a ``.ipynb_checkpoints/`` folder shifted the labels (``IndexError: Target
10 is out of bounds``), and 16-bit grayscale PNGs were clipped at 255 by the 8-bit conversion.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from robustbench_sparse.errors import UserError
from robustbench_sparse.image_files import image_dataset, is_hidden, is_image_file, read_image

# A gradient whose true [0, 1] values are known (320 pixels, one of them white).
_RAMP = np.linspace(0.0, 1.0, 320).reshape(16, 20)  # (H, W) in [0, 1]


def _save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    img = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    img.save(path)
    return path


def _grey(value: torch.Tensor) -> np.ndarray:
    """(3, H, W) grey tensor -> (H, W) numpy, checking the three channels agree."""
    assert (
        value.shape[0] == 3 and torch.equal(value[0], value[1]) and torch.equal(value[0], value[2])
    )
    return value[0].numpy().astype(np.float64)


@pytest.mark.parametrize(
    ("name", "array"),
    [
        ("g16.png", np.round(_RAMP * 65535).astype(np.uint16)),  # mode I;16
        ("g16.tif", np.round(_RAMP * 65535).astype(np.uint16)),  # TIFF, BitsPerSample 16
        ("g16.pgm", np.round(_RAMP * 65535).astype(np.uint16)),  # PGM maxval 65535: mode I
        ("f32.tif", _RAMP.astype(np.float32)),  # mode F within [0, 1]
    ],
)
def test_high_bit_depths_scale_to_unit_range(tmp_path: Path, name: str, array: np.ndarray) -> None:
    image = read_image(_save(tmp_path / name, array))
    assert isinstance(image, torch.Tensor) and image.dtype == torch.float32
    values = _grey(image)
    assert values.shape == _RAMP.shape
    assert np.abs(values - _RAMP).max() < 1e-4  # not clipped: the ramp survives
    assert int((values >= 1.0 - 1e-6).sum()) == 1  # one white pixel, as in the source


def test_sixteen_bit_big_endian_and_twelve_bit_tiff(tmp_path: Path) -> None:
    ramp = np.round(_RAMP * 65535).astype(np.uint16)
    big = Image.frombytes("I;16B", (20, 16), ramp.astype(">u2").tobytes())
    big.save(tmp_path / "b.tif")
    assert np.abs(_grey(read_image(tmp_path / "b.tif")) - _RAMP).max() < 1e-4
    twelve = np.round(_RAMP * 4095).astype(np.uint16)  # a 12-bit scan declares BitsPerSample 12
    Image.fromarray(twelve).save(tmp_path / "t12.tif", tiffinfo={258: 12})
    found = read_image(tmp_path / "t12.tif")
    if getattr(Image.open(tmp_path / "t12.tif"), "tag_v2", {}).get(258) in (12, (12,)):
        assert np.abs(_grey(found) - _RAMP).max() < 1e-3
    else:  # Pillow wrote 16 bits: then the 16-bit scale is the right one
        assert np.abs(_grey(found) - twelve / 65535).max() < 1e-4


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr", "I;16"])
def test_every_mode_agrees_with_its_eight_bit_reading(tmp_path: Path, mode: str) -> None:
    """Each mode's [0, 1] values match the image's own 8-bit L/RGB reading (within 1/255)."""
    rgb = np.stack([np.round(_RAMP * 255)] * 3, axis=-1).astype(np.uint8)  # (H, W, 3) grey ramp
    source = Image.fromarray(rgb)
    if mode == "I;16":
        img = Image.fromarray(np.round(_RAMP * 255).astype(np.uint16) * 257)  # 8-bit x 257
    elif mode == "1":
        img = source.convert("L").point(lambda v: 255 if v >= 128 else 0).convert("1")
    else:
        img = source.convert(mode)
    suffix = ".tif" if mode in ("CMYK", "YCbCr", "I;16") else ".png"
    path = tmp_path / f"m{suffix}"
    (img.convert("RGB") if mode == "YCbCr" else img).save(path)
    found = read_image(path)
    tensor = found if isinstance(found, torch.Tensor) else _pil_to_tensor(found)
    assert tensor.shape == (3, 16, 20)
    expected = np.asarray(Image.open(path).convert("RGB") if mode != "I;16" else source)
    assert np.abs(tensor.permute(1, 2, 0).numpy() - expected / 255.0).max() <= 1 / 255 + 1e-6


def _pil_to_tensor(img: Image.Image) -> torch.Tensor:
    assert img.mode == "RGB"
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255.0


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: _save(p / "f.tif", (_RAMP * 3).astype(np.float32)), r"values in \[0, 3\], not"),
        (lambda p: _save(p / "neg.tif", (_RAMP - 0.5).astype(np.float32)), "not \\[0, 1\\]"),
        (lambda p: _save(p / "i32.tif", (_RAMP * 4e9 - 2e9).astype(np.int32)), "do not fit"),
        (
            lambda p: (p / "junk.png").write_bytes(b"not an image") and p / "junk.png",
            "not a readable",
        ),
    ],
)
def test_unscalable_images_are_refused_in_one_line(
    tmp_path: Path, make: object, match: str
) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(UserError, match=match) as info:
        read_image(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize(
    ("rel", "hidden"),
    [
        ("cat/0.png", False),
        (".ipynb_checkpoints/0.png", True),
        ("cat/.ipynb_checkpoints/0-checkpoint.png", True),
        ("cat/.DS_Store", True),
        ("cat/._0.png", True),  # macOS resource fork in a zip
        ("cat/x.y.png", False),
    ],
)
def test_is_hidden(tmp_path: Path, rel: str, hidden: bool) -> None:
    assert is_hidden(tmp_path / rel, tmp_path) == hidden
    assert is_image_file(tmp_path / rel, tmp_path) == (not hidden and rel.endswith(".png"))


def test_image_dataset_skips_hidden_folders_and_files(tmp_path: Path) -> None:
    pixels = np.full((4, 4, 3), 100, dtype=np.uint8)
    for cls in ("a", "b", ".ipynb_checkpoints", ".git"):
        (tmp_path / cls).mkdir()
        Image.fromarray(pixels).save(tmp_path / cls / "0.png")
    (tmp_path / "b" / ".ipynb_checkpoints").mkdir()
    Image.fromarray(pixels).save(tmp_path / "b" / ".ipynb_checkpoints" / "0-checkpoint.png")
    Image.fromarray(pixels).save(tmp_path / "a" / "._0.png")
    data = image_dataset(tmp_path, lambda img: torch.zeros(1))
    assert data.classes == ["a", "b"]  # type: ignore[attr-defined]
    assert sorted((Path(p).relative_to(tmp_path).as_posix(), y) for p, y in data.samples) == [  # type: ignore[attr-defined]
        ("a/0.png", 0),
        ("b/0.png", 1),
    ]


def test_image_dataset_without_visible_classes_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / ".hidden").mkdir()
    with pytest.raises(UserError, match="unusable: no class folder"):
        image_dataset(tmp_path, lambda img: torch.zeros(1))
