"""Saved adversarials: one safetensors file per (checkpoint, attack) cell, for transfer and reuse.

``--save-adversarials`` (``rbs attack``; ``[attack] save_adversarials`` in ``rbs run``) writes,
next to the cells, ``<results>/adversarials/<checkpoint>/<attack>@<backend>.safetensors``:

================  ==================  ========================================================
tensor            shape / dtype       meaning
================  ==================  ========================================================
``examples``      (N,) int64          the evaluated examples: indices into the dataset's test split
``labels``        (N,) int64          their labels
``position``      (M,) int64          which evaluated example each adversarial belongs to (0..N-1)
``eps_index``     (M,) int64          the epsilon (index into ``epsilons``) it was found at
``adversarials``  (M, C, H, W) f32    the adversarial examples, pixel scale [0, 1]
================  ==================  ========================================================

Only *verified* adversarials are kept: the attack's ``success`` (inside ``[0, 1]`` and the
epsilon ball, misclassified by the source) on examples the source classified correctly. An
example with no adversarial at ``eps_k`` is its clean self there. The header's metadata (one JSON
key, :data:`META_KEY`) names the source checkpoint (name, path, weights SHA-256), the dataset, the
attack, backend, norm, parameters and epsilons, the source cell's fingerprint and the SHA-256 of
the clean examples (float32, in ``examples`` order), so a file can be checked against the data it
is applied to (:mod:`evaluations.engine.transfer`). Files are written atomically; reading one
never executes code (safetensors holds raw tensors only).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from robustbench_sparse.atomic import atomic_path
from robustbench_sparse.errors import UserError

logger = logging.getLogger(__name__)

__all__ = [
    "ADVERSARIALS_DIR",
    "FORMAT",
    "KeptAdversarials",
    "SavedAdversarials",
    "adversarials_path",
    "clean_sha256",
    "find_adversarial_files",
    "load_adversarials",
    "save_adversarials",
]

#: where a results directory keeps its saved adversarials
ADVERSARIALS_DIR = "adversarials"
#: the ``format`` field of the metadata (a file without it is not one of ours)
FORMAT = "robustbench-sparse-adversarials"
FORMAT_VERSION = 1
#: the one safetensors metadata key (JSON text)
META_KEY = "rbs"
_TENSORS = ("examples", "labels", "position", "eps_index", "adversarials")


@dataclass
class KeptAdversarials:
    """The verified adversarials of one cell, as the grid keeps them in memory.

    ``position`` (M,) int64 indexes the cell's examples, ``eps_index`` (M,) int64 its epsilons,
    ``adversarials`` (M, C, H, W) float32 on the CPU.
    """

    position: Tensor
    eps_index: Tensor
    adversarials: Tensor

    @staticmethod
    def concat(parts: list[KeptAdversarials], offsets: list[int]) -> KeptAdversarials:
        """Join per-batch (or per-rank) parts; ``offsets[i]`` is part i's first example."""
        if not parts:
            raise ValueError("no parts to join")
        return KeptAdversarials(
            torch.cat([p.position + o for p, o in zip(parts, offsets, strict=True)]),
            torch.cat([p.eps_index for p in parts]),
            torch.cat([p.adversarials for p in parts]),
        )


@dataclass
class SavedAdversarials:
    """One saved cell: the source's verified adversarials and what identifies them.

    Tensor shapes: ``examples``, ``labels`` (N,) int64; ``kept`` see :class:`KeptAdversarials`.
    ``epsilons`` are in [0, 1] pixel units of ``norm``.
    """

    source: str  # checkpoint name
    source_path: str
    weights_sha256: str | None
    dataset: str
    attack: str
    backend: str
    norm: str  # "linf" | "l2"
    epsilons: list[float]
    params: dict[str, Any]
    fingerprint: str  # the source cell's fingerprint (evaluations.engine.grid)
    clean_sha256: str
    examples: Tensor
    labels: Tensor
    kept: KeptAdversarials
    path: Path | None = field(default=None, compare=False)

    def metadata(self) -> dict[str, Any]:
        """The JSON metadata stored in the file's header."""
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "source": self.source,
            "source_path": self.source_path,
            "weights_sha256": self.weights_sha256,
            "dataset": self.dataset,
            "attack": self.attack,
            "backend": self.backend,
            "norm": self.norm,
            "epsilons": list(self.epsilons),
            "params": self.params,
            "fingerprint": self.fingerprint,
            "clean_sha256": self.clean_sha256,
        }


def clean_sha256(x: Tensor) -> str:
    """SHA-256 of clean examples ``x`` (N, C, H, W) as contiguous float32 bytes."""
    data = x.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
    return hashlib.sha256(data).hexdigest()


def adversarials_path(out_dir: Path, checkpoint: str, label: str) -> Path:
    """``<out_dir>/adversarials/<checkpoint>/<label>.safetensors`` (label: ``attack@backend``)."""
    return out_dir / ADVERSARIALS_DIR / checkpoint / f"{label}.safetensors"


def save_adversarials(path: Path, saved: SavedAdversarials) -> Path:
    """Write ``saved`` to ``path`` atomically (safetensors; metadata as one JSON key)."""
    kept = saved.kept
    tensors = {
        "examples": saved.examples.to(torch.int64).contiguous(),
        "labels": saved.labels.to(torch.int64).contiguous(),
        "position": kept.position.to(torch.int64).contiguous(),
        "eps_index": kept.eps_index.to(torch.int64).contiguous(),
        "adversarials": kept.adversarials.to(torch.float32).contiguous(),
    }
    meta = json.dumps(saved.metadata(), sort_keys=True, default=str)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: meta})
    logger.info("saved %d adversarials to %s", int(kept.position.numel()), path)
    return path


def _read(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Tensors and parsed metadata of a file, or a one-line :class:`UserError`."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
        tensors = load_file(str(path), device="cpu")
        meta = json.loads(header[META_KEY])
    except (SafetensorError, OSError, ValueError, KeyError) as exc:
        raise UserError(
            f"{path} is not a saved-adversarials file ({type(exc).__name__}); pass files "
            "written by --save-adversarials"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(f"{path} is not a saved-adversarials file (no {FORMAT} metadata)")
    if meta.get("version") != FORMAT_VERSION:
        raise UserError(
            f"{path}: saved-adversarials format version {meta.get('version')!r} is not supported "
            f"(this version reads {FORMAT_VERSION})"
        )
    missing = [t for t in _TENSORS if t not in tensors]
    if missing:
        raise UserError(f"{path} lacks the tensors {', '.join(missing)}; it is damaged")
    return tensors, meta


def load_adversarials(path: str | Path) -> SavedAdversarials:
    """Read a file written by :func:`save_adversarials` (shapes checked; contents not yet).

    Raises:
        UserError: not such a file, another format version, or inconsistent tensor shapes.
            Whether the adversarials fit a dataset is checked by
            :func:`evaluations.engine.transfer.check_saved`.
    """
    p = Path(path)
    t, meta = _read(p)
    n, m = int(t["examples"].numel()), int(t["position"].numel())
    eps = [float(e) for e in meta.get("epsilons", [])]
    shapes_ok = (
        t["examples"].ndim == 1
        and t["labels"].shape == (n,)
        and t["position"].ndim == 1
        and t["eps_index"].shape == (m,)
        and t["adversarials"].ndim >= 2
        and t["adversarials"].shape[0] == m
        and (m == 0 or (int(t["position"].min()) >= 0 and int(t["position"].max()) < n))
        and (m == 0 or (int(t["eps_index"].min()) >= 0 and int(t["eps_index"].max()) < len(eps)))
    )
    if not shapes_ok:
        raise UserError(f"{p}: the saved tensors do not fit together (damaged file)")
    return SavedAdversarials(
        source=str(meta.get("source")),
        source_path=str(meta.get("source_path")),
        weights_sha256=meta.get("weights_sha256"),
        dataset=str(meta.get("dataset")),
        attack=str(meta.get("attack")),
        backend=str(meta.get("backend")),
        norm=str(meta.get("norm")),
        epsilons=eps,
        params=dict(meta.get("params") or {}),
        fingerprint=str(meta.get("fingerprint")),
        clean_sha256=str(meta.get("clean_sha256")),
        examples=t["examples"],
        labels=t["labels"],
        kept=KeptAdversarials(t["position"], t["eps_index"], t["adversarials"]),
        path=p,
    )


def find_adversarial_files(root: str | Path) -> list[Path]:
    """The saved-adversarials files under ``root``, sorted.

    ``root`` is a results directory (its ``adversarials/`` is searched), any directory below it,
    or one ``.safetensors`` file.

    Raises:
        UserError: ``root`` does not exist or holds no ``.safetensors`` file.
    """
    p = Path(root)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise UserError(f"--adversarials {p}: no such file or directory")
    base = p / ADVERSARIALS_DIR if (p / ADVERSARIALS_DIR).is_dir() else p
    files = sorted(f for f in base.rglob("*.safetensors") if not f.name.startswith("."))
    if not files:
        raise UserError(
            f"--adversarials {p}: no saved adversarials (*.safetensors) there; write them with "
            "rbs attack --save-adversarials"
        )
    return files
