"""``rbs certify``: certified robustness of checkpoints (issue 28).

``smoothing``: randomized smoothing (Cohen et al. 2019, :mod:`evaluations.engine.certify_smoothing`):
certified accuracy at a grid of L2 radii, the abstention count and each example's radius.
``ibp``: interval bound propagation (Gowal et al. 2018, :mod:`evaluations.engine.certify_ibp`):
verified accuracy per L-infinity eps.

:func:`run_certify_job` certifies every checkpoint and writes ``certified.csv`` and the per-example
files (:mod:`evaluations.record.certified`); it is what ``rbs run`` calls with a ``[certify]``
section (:func:`certify_settings`). :func:`run_certify_command` is the whole ``rbs certify`` run:
checks, output directory, the ``certify.json`` sidecar.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from evaluations.engine.certify_smoothing import (
    SmoothingSettings,
    certified_counts,
    certify,
    max_certifiable_radius,
)
from evaluations.engine.data_checks import check_input_shape
from evaluations.record.certified import certified_rows, write_certified, write_examples
from evaluations.record.training_methods import checkpoint_training
from rbs.attack_job import AttackRunRequest, load_request_checkpoints
from rbs.attack_job import _recorded_image_size as recorded_image_size
from rbs.attack_job import _recorded_roots as recorded_roots
from robustbench_sparse.atomic import atomic_write_text
from robustbench_sparse.checkpoint import LoadedCheckpoint
from robustbench_sparse.config import to_jsonable
from robustbench_sparse.data_roots import load_evaluation_split
from robustbench_sparse.datasets import evaluation_subset_record
from robustbench_sparse.devices import resolve_device
from robustbench_sparse.errors import UserError
from robustbench_sparse.outdir import OutputRules, prepare_output_dir

__all__ = [
    "CERTIFY_JSON",
    "CERTIFY_KEYS",
    "DEFAULT_EPSILONS",
    "DEFAULT_RADII",
    "CertifySettings",
    "certify_settings",
    "run_certify_command",
    "run_certify_job",
    "summary",
    "write_certify_sidecar",
]

logger = logging.getLogger(__name__)

CERTIFY_JSON = "certify.json"
METHODS = ("smoothing", "ibp")
#: L2 radii of the smoothing grid (pixel units; Cohen et al.'s CIFAR table goes to 1.5)
DEFAULT_RADII = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)
#: L-infinity eps of the ibp grid
DEFAULT_EPSILONS = (0.05, 0.1)
#: the keys of a ``[certify]`` section
CERTIFY_KEYS = (
    "method", "sigma", "n0", "n", "alpha", "radii", "epsilons", "batch_size", "seed", "limit",
    "device",
)  # fmt: skip


@dataclass(frozen=True)
class CertifySettings:
    """What to certify and how (every value in [0, 1] pixel units).

    Attributes:
        method: ``smoothing`` or ``ibp``.
        sigma: smoothing noise (required for smoothing; usually the training sigma).
        n0, n, alpha: CERTIFY's selection samples, estimation samples, failure probability.
        radii: smoothing's L2 radii; epsilons: ibp's L-infinity eps.
        batch_size: noisy copies (smoothing) or examples (ibp) per forward pass.
        seed: the smoothing noise seed; limit: class-balanced test examples; device.
    """

    method: str = "smoothing"
    sigma: float | None = None
    n0: int = 100
    n: int = 10_000
    alpha: float = 0.001
    radii: tuple[float, ...] = DEFAULT_RADII
    epsilons: tuple[float, ...] = DEFAULT_EPSILONS
    batch_size: int = 1000
    seed: int = 0
    limit: int | None = None
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UserError(f"certify method {self.method!r} is unknown; valid: smoothing, ibp")
        if self.method == "smoothing" and (
            self.sigma is None or not (math.isfinite(self.sigma) and self.sigma > 0)
        ):
            raise UserError(
                "smoothing certification needs sigma > 0 in [0,1] pixel units, e.g. 0.25 "
                f"(rbs certify: --sigma; rbs run: [certify.smoothing] sigma; got {self.sigma})"
            )
        for name in ("n0", "n", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise UserError(f"certify {name} must be >= 1 (got {getattr(self, name)})")
        if not 0 < self.alpha < 0.5:
            raise UserError(f"certify alpha must be in (0, 0.5), e.g. 0.001 (got {self.alpha})")
        grid = self.radii if self.method == "smoothing" else self.epsilons
        if not grid or any(not (math.isfinite(v) and v >= 0) for v in grid):
            what = "radii" if self.method == "smoothing" else "epsilons"
            raise UserError(
                f"certify {what} must be numbers >= 0 in [0,1] pixel units (got {list(grid)})"
            )
        if self.limit is not None and self.limit < 1:
            raise UserError(f"certify limit must be >= 1 (got {self.limit})")

    def smoothing(self) -> SmoothingSettings:
        """The engine's settings (smoothing only)."""
        return SmoothingSettings(
            sigma=float(self.sigma or 0), n0=self.n0, n=self.n, alpha=self.alpha,
            batch_size=self.batch_size, seed=self.seed,
        )  # fmt: skip


def certify_settings(table: Mapping[str, Any], where: str = "[certify]") -> CertifySettings:
    """A ``[certify]`` table -> :class:`CertifySettings` (UserError in one line)."""
    unknown = sorted(set(table) - set(CERTIFY_KEYS))
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}; valid: {', '.join(CERTIFY_KEYS)}")
    values = dict(table)
    for key in ("radii", "epsilons"):
        if key in values:
            v = values[key]
            values[key] = tuple(float(x) for x in (v if isinstance(v, (list, tuple)) else [v]))
    for key in ("n0", "n", "batch_size", "seed"):
        if key in values:
            values[key] = int(values[key])
    if values.get("sigma") is not None:
        values["sigma"] = float(values["sigma"])
    return CertifySettings(**values)


def _tensors(split: Any) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """A split -> (N, C, H, W) images, (N,) labels, each example's index in the full split."""
    xs, ys = zip(*(split[i] for i in range(len(split))), strict=True)
    index = [int(i) for i in getattr(split, "indices", range(len(split)))]
    return torch.stack(list(xs)), torch.as_tensor([int(y) for y in ys]), index


def _ident(ckpt: LoadedCheckpoint) -> dict[str, Any]:
    return {
        "checkpoint": ckpt.name,
        "arch": str(ckpt.meta.get("arch")),
        "dataset": ckpt.info.name,
        "granularity": ckpt.granularity,
        "sparsity_target": ckpt.sparsity_target,
        "sparsity_achieved": ckpt.sparsity_achieved,
        "training": checkpoint_training(ckpt.meta)["training"],
    }


def _split_of(data: Any, ckpt: LoadedCheckpoint) -> Any:
    """``data``: one test split, or a mapping dataset name -> test split."""
    return data[ckpt.info.name] if isinstance(data, Mapping) else data


def _smoothing(
    ckpt: LoadedCheckpoint, x: torch.Tensor, y: torch.Tensor, index: list[int], s: CertifySettings,
    out_dir: Path, device: torch.device,
) -> list[dict[str, Any]]:  # fmt: skip
    t0 = time.perf_counter()
    cap = max_certifiable_radius(float(s.sigma or 0), s.n, s.alpha)
    if max(s.radii) > cap:
        logger.warning(
            "radii above %.3f cannot be certified at sigma %g with n %d, alpha %g "
            "(the cap of a unanimous vote)", cap, s.sigma, s.n, s.alpha,
        )  # fmt: skip
    cert = certify(ckpt.model.to(device), x, s.smoothing(), indices=index)
    seconds = time.perf_counter() - t0
    write_examples(out_dir, ckpt.name, "smoothing", {
        "index": index, "label": y.numpy(), "prediction": cert.prediction.numpy(),
        "radius": cert.radius.numpy(), "count": cert.count.numpy(),
        "p_lower": cert.p_lower.numpy(),
    })  # fmt: skip
    correct = certified_counts(cert, y, s.radii)
    abstained = int(cert.abstained.sum())
    logger.info(
        "smoothing %s: certified accuracy %s at L2 radii %s, %d/%d abstained (%.1fs)",
        ckpt.name, [round(c / max(len(y), 1), 4) for c in correct], list(s.radii),
        abstained, len(y), seconds,
    )  # fmt: skip
    return certified_rows(
        _ident(ckpt), method="smoothing", norm="l2", radii=s.radii, correct=correct, n=len(y),
        abstained=abstained, sigma=float(s.sigma or 0), n0=s.n0, n_samples=s.n, alpha=s.alpha,
        seconds=seconds,
    )  # fmt: skip


def _ibp(
    ckpt: LoadedCheckpoint, x: torch.Tensor, y: torch.Tensor, index: list[int], s: CertifySettings,
    out_dir: Path, device: torch.device,
) -> list[dict[str, Any]]:  # fmt: skip
    verified_ibp = ibp_function()
    t0 = time.perf_counter()
    model = ckpt.model.to(device).eval()
    verified = verified_ibp(model, x.to(device), y.to(device), list(s.epsilons),
                            batch_size=s.batch_size).cpu()  # fmt: skip  # (len(eps), N) bool
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        pred = torch.cat([model(x[i : i + s.batch_size].to(device)).argmax(1).cpu()
                          for i in range(0, len(y), s.batch_size)])  # fmt: skip
    columns: dict[str, Any] = {"index": index, "label": y.numpy(), "prediction": pred.numpy()}
    for e, row in zip(s.epsilons, verified, strict=True):
        columns[f"verified_{e:g}"] = row.numpy()
    write_examples(out_dir, ckpt.name, "ibp", columns)
    correct = [int(row.sum()) for row in verified]
    return certified_rows(
        _ident(ckpt), method="ibp", norm="linf", radii=s.epsilons, correct=correct, n=len(y),
        seconds=seconds,
    )  # fmt: skip


def ibp_function() -> Any:
    """``evaluations.engine.certify_ibp.verified_ibp``, imported when ibp is asked for.

    Raises:
        UserError: the module is not part of this installation yet.
    """
    try:
        module = importlib.import_module("evaluations.engine.certify_ibp")
        return module.verified_ibp
    except (ImportError, AttributeError):
        raise UserError(
            "--method ibp is not available in this installation; use --method smoothing"
        ) from None


def run_certify_job(
    checkpoints: Sequence[LoadedCheckpoint],
    data: Any,
    settings: CertifySettings,
    out_dir: str | Path,
) -> pd.DataFrame:
    """Certify every checkpoint; write ``out_dir/certified.csv`` and ``out_dir/certify/*.csv``.

    ``data``: the test split (already limited), or a mapping dataset name -> test split. Returns
    the ``certified.csv`` rows (one per checkpoint and radius / eps).
    """
    if settings.method == "ibp":
        ibp_function()  # refused before any work
    device = resolve_device(settings.device)
    out = Path(out_dir)
    rows: list[dict[str, Any]] = []
    for ckpt in checkpoints:
        x, y, index = _tensors(_split_of(data, ckpt))
        logger.info("certify (%s): %s, %d examples", settings.method, ckpt.name, len(y))
        run = _smoothing if settings.method == "smoothing" else _ibp
        rows += run(ckpt, x, y, index, settings, out, device)
    df = pd.DataFrame(rows)
    write_certified(df, out)
    return df


def summary(df: pd.DataFrame, settings: CertifySettings) -> list[dict[str, Any]]:
    """The ``--json`` object of each checkpoint: method, norm, radii / epsilons, accuracy, n."""
    out = []
    for ckpt, sub in df.groupby("checkpoint", sort=False):
        grid_key = "radii" if settings.method == "smoothing" else "epsilons"
        out.append(
            {
                "checkpoint": str(ckpt),
                "method": settings.method,
                "norm": str(sub["norm"].iloc[0]),
                grid_key: [float(v) for v in sub["radius"]],
                "certified_accuracy": [float(v) for v in sub["certified_accuracy"]],
                "n": int(sub["n"].iloc[0]),
                "abstained": int(sub["abstained"].iloc[0]),
            }
        )
    return out


def write_certify_sidecar(out_dir: str | Path, record: Mapping[str, Any]) -> Path:
    """Write ``certify.json`` (the command, settings, seed policy) next to ``certified.csv``."""
    text = json.dumps(to_jsonable(dict(record)), indent=2, default=str) + "\n"
    return atomic_write_text(Path(out_dir) / CERTIFY_JSON, text)


#: ``rbs certify``'s output rules: a non-empty --out is replaced only with --overwrite
_RULES = OutputRules(
    marker=None,
    resume_another_job=False,
    refused="output directory {out} already exists and is not empty; pass --overwrite to "
    "replace it or choose another --out",
)


def run_certify_command(
    request: AttackRunRequest,
    settings: CertifySettings,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    command: str | None = None,
) -> pd.DataFrame:
    """``rbs certify``: load (checkpoints and data: ``request``'s loading options), check, then
    certify into ``out_dir`` and write ``certify.json``. Nothing is written before the checks."""
    if settings.method == "ibp":
        ibp_function()
    checkpoints = load_request_checkpoints(request)
    resolve_device(settings.device)  # a missing CUDA fails here, before the output is touched
    data = {
        name: load_evaluation_split(
            name,
            recorded_roots(checkpoints, name),
            request.data_root,
            download=request.download,
            limit=settings.limit,
            augment=False,
            image_size=request.image_size or recorded_image_size(checkpoints, name),
        )
        for name in sorted({c.info.name for c in checkpoints})
    }
    for ckpt in checkpoints:  # data of another shape: refused before the output is touched
        test = data[ckpt.info.name]
        if len(test):  # type: ignore[arg-type]
            check_input_shape(ckpt.name, ckpt.meta, ckpt.info.name, test[0][0].unsqueeze(0))
    out = Path(out_dir)
    prepare_output_dir(out, _RULES, overwrite=overwrite, resume=False)
    t0 = time.perf_counter()
    df = run_certify_job(checkpoints, data, settings, out)
    write_certify_sidecar(
        out,
        {
            "command": command,
            "request": to_jsonable(request),
            "settings": to_jsonable(settings),
            "seed_policy": "smoothing noise of example i (its index in the test split) from its "
            "own torch.Generator on the model's device, seeded seed*1000003 + 2i (selection) "
            "and + 1 (estimation); independent of --limit and order, not of batch size/device",
            "evaluation_subset": {
                name: evaluation_subset_record(test, settings.limit) for name, test in data.items()
            },
            "seconds": time.perf_counter() - t0,
            "summary": summary(df, settings),
        },
    )
    return df
