"""Transfer attacks: score a checkpoint on adversarials crafted on another one (or saved earlier).

The classic question for pruned models (Vora et al. 2023, "Adversarial robustness of sparse
networks": are the dense model's adversarials still adversarial for its pruned versions?):
``rbs attack --transfer-from DENSE --checkpoint SPARSE ...`` crafts with every attack of the grid
on ``DENSE`` (its white-box cells) and scores every other checkpoint on the verified adversarials;
``rbs attack --adversarials DIR`` scores checkpoints on adversarials saved by an earlier run
(``--save-adversarials``, :mod:`evaluations.record.adversarials`).

A *transfer cell* has the source cell's epsilons and examples. Per example ``i`` and epsilon
``eps_k`` the target sees the source's adversarial where the source found one (misclassified by
the source, verified inside [0, 1] and the ball), else the clean example; ``robust[k, i]`` is
True when the target classifies what it sees correctly (and the clean example too). No gradient
of the target is taken. Its rows are named ``<attack> from <source>`` with ``transfer_from =
<source>`` (:func:`transfer_label`); the worst case over attacks stays white-box unless
:attr:`TransferPlan.in_worst_case`.

Saved adversarials are checked before use (:func:`check_saved`): the dataset and the example
indices, labels and clean bytes must match the dataset's test split, and every adversarial must lie
in [0, 1] and inside its epsilon ball around the example it came from; otherwise a one-line
:class:`~robustbench_sparse.errors.UserError` refuses the file.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from attacks import Norm, perturbation_norm, verify_adversarials
from evaluations.engine.cell_attack import evaluation_tensors
from evaluations.record.adversarials import (
    KeptAdversarials,
    SavedAdversarials,
    clean_sha256,
    load_adversarials,
)
from evaluations.record.cells import CellOutcome
from robustbench_sparse.checkpoint import LoadedCheckpoint
from robustbench_sparse.datasets import balanced_subset, subset_indices
from robustbench_sparse.errors import UserError

logger = logging.getLogger(__name__)

__all__ = [
    "TransferPlan",
    "TransferSource",
    "check_saved",
    "example_indices",
    "saved_from_cell",
    "source_from_file",
    "source_from_saved",
    "transfer_cell",
    "transfer_label",
]


def transfer_label(attack: str, source: str) -> str:
    """The ``attack`` column of a transfer row: ``"pgd from dense"``."""
    return f"{attack} from {source}"


@dataclass(frozen=True)
class TransferSource:
    """Saved adversarials together with the clean examples they came from.

    ``x`` (N, C, H, W) float32 in [0, 1] and ``y`` (N,) int64 are the dataset's examples at
    ``saved.examples``, in that order.
    """

    saved: SavedAdversarials
    x: Tensor
    y: Tensor

    @property
    def label(self) -> str:
        """The rows' attack name (:func:`transfer_label`)."""
        return transfer_label(self.saved.attack, self.saved.source)


@dataclass(frozen=True)
class TransferPlan:
    """What the grid does besides white-box attacks (all off by default).

    ``save``: write every white-box cell's verified adversarials
    (:mod:`evaluations.record.adversarials`). ``source``: the name of the checkpoint to craft on;
    every other checkpoint is scored on its adversarials (its files are written too: they are the
    evidence of the transfer rows). ``sources``: adversarials loaded up front
    (:func:`source_from_file`), scored on every checkpoint. ``in_worst_case``: transfer cells join
    the per-example worst case of their norm (needs the grid's epsilons and examples).
    """

    save: bool = False
    source: str | None = None
    in_worst_case: bool = False
    sources: tuple[TransferSource, ...] = ()

    def keeps(self, checkpoint: str) -> bool:
        """Whether ``checkpoint``'s white-box cells keep (and write) their adversarials."""
        return self.save or checkpoint == self.source

    def describe(self) -> dict[str, Any]:
        """What the sidecar records (JSON-safe)."""
        return {
            "save_adversarials": self.save,
            "transfer_from": self.source,
            "transfer_in_worst_case": self.in_worst_case,
            "adversarials": [
                {
                    "path": str(s.saved.path),
                    "source": s.saved.source,
                    "weights_sha256": s.saved.weights_sha256,
                    "attack": s.saved.attack,
                    "backend": s.saved.backend,
                    "norm": s.saved.norm,
                    "n": int(s.saved.examples.numel()),
                    "saved": int(s.saved.kept.position.numel()),
                }
                for s in self.sources
            ],
        }

    def ordered(self, checkpoints: Sequence[LoadedCheckpoint]) -> list[LoadedCheckpoint]:
        """``checkpoints`` with the source first (its adversarials are needed by the others).

        Raises:
            UserError: the source is not among the checkpoints, or another checkpoint has
                another dataset.
        """
        if self.source is None:
            return list(checkpoints)
        first = [c for c in checkpoints if c.name == self.source]
        if not first:
            names = ", ".join(c.name for c in checkpoints)
            raise UserError(
                f"transfer source {self.source!r} is not among the checkpoints ({names})"
            )
        others = [c for c in checkpoints if c.name != self.source]
        for c in others:
            if c.info.name != first[0].info.name:
                raise UserError(
                    f"transfer from {self.source!r} ({first[0].info.name}) cannot score "
                    f"{c.name!r} ({c.info.name}): the datasets differ"
                )
        return first + others


def example_indices(data: Dataset[Any], limit: int | None) -> Tensor:
    """Indices into the test split of the examples a grid evaluates, (N,) int64.

    The same subset as :func:`evaluations.engine.cell_attack.evaluation_tensors` (``data`` as the
    grid receives it: the split itself or a ``Subset`` of it).
    """
    chosen = balanced_subset(data, limit)
    idx = subset_indices(chosen)
    n = len(chosen)  # type: ignore[arg-type]
    return torch.arange(n, dtype=torch.int64) if idx is None else torch.tensor(idx[:n])


def saved_from_cell(
    ckpt: LoadedCheckpoint,
    attack: tuple[str, str, str],
    cell: CellOutcome,
    fingerprint: str,
    xy: tuple[Tensor, Tensor],
    examples: Tensor,
) -> SavedAdversarials:
    """The file record of a white-box cell that kept its adversarials.

    ``attack`` is ``(name, backend, norm)``; ``xy`` the cell's clean examples (N, C, H, W) and
    labels (N,); ``examples`` their indices into the test split (N,).
    """
    if cell.adversarials is None:
        raise ValueError("the cell kept no adversarials")
    name, backend, norm = attack
    return SavedAdversarials(
        source=ckpt.name,
        source_path=str(ckpt.path),
        weights_sha256=ckpt.meta.get("weights_sha256"),
        dataset=ckpt.info.name,
        attack=name,
        backend=backend,
        norm=norm,
        epsilons=list(cell.epsilons),
        params=dict(cell.params),
        fingerprint=fingerprint,
        clean_sha256=clean_sha256(xy[0]),
        examples=examples.to(torch.int64),
        labels=xy[1].to(torch.int64),
        kept=cell.adversarials,
    )


def check_saved(saved: SavedAdversarials, x: Tensor, y: Tensor, dataset: str) -> None:
    """Refuse saved adversarials that do not belong to these clean examples.

    ``x`` (N, C, H, W) and ``y`` (N,) are ``dataset``'s test examples at ``saved.examples``.

    Raises:
        UserError: another dataset, labels or clean examples that differ, adversarials of another
            shape, or any adversarial outside [0, 1] or its epsilon ball around its example.
    """
    where = str(saved.path or f"adversarials of {saved.source}")
    if saved.dataset != dataset:
        raise UserError(f"{where}: made on dataset {saved.dataset!r}, not {dataset!r}")
    differ = int((saved.labels != y.to(saved.labels.dtype)).sum())
    if differ:
        raise UserError(
            f"{where}: {differ} of {len(y)} labels differ from the {dataset} test split; the "
            "adversarials were made on other data"
        )
    if clean_sha256(x) != saved.clean_sha256:
        raise UserError(
            f"{where}: the clean examples differ from the {dataset} test split (SHA-256); the "
            "adversarials were made on other data or preprocessing (pass the same --data-root)"
        )
    adv = saved.kept.adversarials
    if adv.numel() and tuple(adv.shape[1:]) != tuple(x.shape[1:]):
        raise UserError(
            f"{where}: adversarials of shape {tuple(adv.shape[1:])}, examples of "
            f"{tuple(x.shape[1:])}"
        )
    try:
        norm = Norm(saved.norm)
    except ValueError:
        raise UserError(f"{where}: unknown norm {saved.norm!r}") from None
    eps = torch.tensor(saved.epsilons, dtype=torch.float64)[saved.kept.eps_index]  # (M,)
    ok = verify_adversarials(adv, x[saved.kept.position], eps, norm)  # (M,)
    bad = int((~ok).sum())
    if bad:
        raise UserError(
            f"{where}: {bad} of {len(ok)} saved adversarials lie outside [0, 1] or their "
            f"{saved.norm} ball around the example they came from; refusing the file"
        )


def source_from_file(path: str | Path, test: Dataset[Any]) -> TransferSource:
    """Load a saved-adversarials file and check it against ``test`` (the whole test split).

    Raises:
        UserError: unreadable file, indices outside the split, or :func:`check_saved`.
    """
    return source_from_saved(load_adversarials(path), test)


def source_from_saved(saved: SavedAdversarials, test: Dataset[Any]) -> TransferSource:
    """:func:`source_from_file` for adversarials already loaded."""
    path = saved.path or f"adversarials of {saved.source}"
    n = len(test)  # type: ignore[arg-type]
    ex = saved.examples
    if ex.numel() and (int(ex.min()) < 0 or int(ex.max()) >= n):
        raise UserError(
            f"{path}: example indices up to {int(ex.max())} but the {saved.dataset} test split "
            f"has {n} examples; the adversarials were made on other data"
        )
    x, y = evaluation_tensors(Subset(test, ex.tolist()), None)
    check_saved(saved, x, y, saved.dataset)
    return TransferSource(saved, x, y)


@torch.no_grad()
def _predict(model: torch.nn.Module, x: Tensor, batch_size: int, device: torch.device) -> Tensor:
    """Predicted classes (N,) on the CPU, in batches."""
    out = [
        model(x[s : s + batch_size].to(device)).argmax(1).cpu()
        for s in range(0, len(x), batch_size)
    ]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.int64)


def transfer_cell(
    model: torch.nn.Module,
    source: TransferSource,
    *,
    batch_size: int,
    device: torch.device,
) -> CellOutcome:
    """Score ``model`` (eval mode) on ``source``'s adversarials; see the module docstring.

    Returns a cell with the source's epsilons (K) over its N examples: ``robust`` (K, N),
    ``norms`` (K, N) the transferred perturbation's norm (0 where the clean example was shown),
    ``grad_evals`` 0. ``params`` records the source and, per epsilon, ``source_broken`` (examples
    the source broke that the target classifies correctly) and ``transferred`` (of those, the
    ones the adversarial also fools: the transfer rate is their ratio).
    """
    t0 = time.perf_counter()
    saved, x, y = source.saved, source.x, source.y
    kept: KeptAdversarials = saved.kept
    k_count, n = len(saved.epsilons), int(x.shape[0])
    model.eval()
    clean_ok = (_predict(model, x, batch_size, device) == y).numpy()  # (N,)
    robust = np.repeat(clean_ok[None, :], k_count, axis=0)  # (K, N)
    norms = np.zeros((k_count, n), dtype=np.float64)
    pos, k_idx = kept.position.numpy(), kept.eps_index.numpy()  # (M,), (M,)
    fooled = (_predict(model, kept.adversarials, batch_size, device) != y[kept.position]).numpy()
    robust[k_idx[fooled], pos[fooled]] = False
    delta = kept.adversarials.double() - x[kept.position].double()  # (M, C, H, W)
    norms[k_idx, pos] = perturbation_norm(delta, Norm(saved.norm)).numpy()
    eligible = clean_ok[pos]  # (M,) the target got the clean example right
    per_eps = [(k_idx == k) & eligible for k in range(k_count)]
    params = {
        "transfer_from": saved.source,
        "source_weights_sha256": saved.weights_sha256,
        "source_attack": saved.attack,
        "source_backend": saved.backend,
        "source_params": saved.params,
        "source_broken": [int(m.sum()) for m in per_eps],
        "transferred": [int((m & fooled).sum()) for m in per_eps],
    }
    return CellOutcome(
        epsilons=list(saved.epsilons),
        clean_correct=clean_ok,
        robust=robust,
        norms=norms,
        min_norm=None,
        seconds=time.perf_counter() - t0,
        grad_evals=0,
        params=params,
        verify_failed=np.zeros(k_count, dtype=np.int64),
    )
