"""The results schema and its files: ``results.csv`` / ``.parquet``, ``results.json``, ``attack_min_norms.parquet``.

Results are a tidy long table, one row per (checkpoint, attack, backend, norm, epsilon):

==========================  =====  ================================================================
column                      type   meaning
==========================  =====  ================================================================
checkpoint                  str    checkpoint name
arch, dataset               str    model architecture and dataset
granularity                 str    ``dense`` or window / channel / combined / unstructured
                                   (Campfire), or gmp / random-erk / random-uniform / grasp /
                                   filter (other pruning methods; ``SparsityConfig.label``)
sparsity_target             float  requested sparsity (0 for dense)
sparsity_achieved           float  measured sparsity
attack                      str    attack name; ``worst_case`` = per-example worst case over the
                                   attacks of that norm
backend                     str    attack implementation (native, torchattacks, foolbox, ...)
norm                        str    ``linf``, ``l2`` or ``l1``
epsilon                     float  perturbation budget
n                           int    examples evaluated
clean_correct               int    examples classified correctly without attack
robust_correct              int    examples still correct under attack
clean_accuracy              float  clean_correct / n
robust_accuracy             float  robust_correct / n
robust_accuracy_low/high    float  95 % Wilson interval of robust_correct / n
success_rate                float  (clean_correct - robust_correct) / clean_correct (NaN if 0)
median_norm                 float  median norm of successful adversarials (NaN if none)
seconds                     float  wall time of the cell attributed to this row
params                      str    JSON of the attack parameters
grad_evals                  int    optional: example-gradient evaluations
verify_failed               int    optional: returned adversarials that failed verification
unreliable                  bool   optional: verify_failed > 1 % of n at some eps of the cell
transfer_from               str    optional: the checkpoint whose saved adversarials were scored
                                   (a transfer row, attack ``<attack> from <checkpoint>``); empty
                                   for white-box rows
==========================  =====  ================================================================

Minimum-norm attacks also store per-example minimal distances, one row per (checkpoint, attack,
example), in ``attack_min_norms.parquet`` (columns :data:`MIN_NORM_COLUMNS`; ``min_norm`` is ``inf``
where no adversarial was found). The best over all attacks per (checkpoint, norm, example) is
``min_norms.parquet`` (:mod:`evaluations.record.security`). The sidecar
``results.json`` carries the evidence: versions, device, git revision, seeds, timings, config,
invariant checks. All files are written atomically.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from robustbench_sparse.atomic import atomic_path, atomic_write_text
from robustbench_sparse.errors import UserError

__all__ = [
    "MIN_NORMS_FILE",
    "MIN_NORM_COLUMNS",
    "OPTIONAL_COLUMNS",
    "RESULTS_CSV",
    "RESULTS_PARQUET",
    "RESULT_COLUMNS",
    "SIDECAR_FILE",
    "TRANSFER_FROM",
    "TRANSFER_INCLUDED",
    "make_min_norms",
    "read_min_norms",
    "read_results",
    "read_sidecar",
    "to_json_safe",
    "validate_results",
    "white_box",
    "write_min_norms",
    "write_results",
    "write_sidecar",
    "write_table",
]

logger = logging.getLogger(__name__)

RESULTS_CSV = "results.csv"
RESULTS_PARQUET = "results.parquet"
SIDECAR_FILE = "results.json"
#: the figures of a results directory (``<results>/figures/*.png|svg``)
FIGURES_DIR = "figures"
#: per-attack minimal distances (the best over attacks is evaluations.record.security.MIN_NORMS_FILE)
MIN_NORMS_FILE = "attack_min_norms.parquet"

_STR_COLUMNS = (
    "checkpoint",
    "arch",
    "dataset",
    "granularity",
    "attack",
    "backend",
    "norm",
    "params",
)
_INT_COLUMNS = ("n", "clean_correct", "robust_correct")
_FLOAT_COLUMNS = (
    "sparsity_target",
    "sparsity_achieved",
    "epsilon",
    "clean_accuracy",
    "robust_accuracy",
    "robust_accuracy_low",
    "robust_accuracy_high",
    "success_rate",
    "median_norm",
    "seconds",
)

#: Required columns of a results frame, in file order.
RESULT_COLUMNS: list[str] = [
    "checkpoint",
    "arch",
    "dataset",
    "granularity",
    "sparsity_target",
    "sparsity_achieved",
    "attack",
    "backend",
    "norm",
    "epsilon",
    "n",
    "clean_correct",
    "robust_correct",
    "clean_accuracy",
    "robust_accuracy",
    "robust_accuracy_low",
    "robust_accuracy_high",
    "success_rate",
    "median_norm",
    "seconds",
    "params",
]
#: Optional columns with a known type; any other extra column is kept as is, after these.
OPTIONAL_COLUMNS: list[str] = ["grad_evals", "verify_failed", "unreliable", "transfer_from"]
#: the column that marks transfer rows (empty for white-box rows)
TRANSFER_FROM = "transfer_from"
#: in a worst-case row's ``params`` when transfer rows joined it (``--transfer-in-worst-case``)
TRANSFER_INCLUDED = "transfer included"

#: Columns of the per-example minimum-norm store.
MIN_NORM_COLUMNS: list[str] = [
    "checkpoint",
    "attack",
    "backend",
    "example",
    "min_norm",
    "clean_correct",
]

_NORMS = frozenset({"linf", "l2", "l1"})


# --------------------------------------------------------------------------- helpers


def _as_str(value: Any) -> str:
    if isinstance(value, enum.Enum):
        return str(value.value)
    return str(value)


def _resolve(path: str | os.PathLike[str], filename: str) -> Path:
    """Accept a results directory or a file inside it."""
    p = Path(path)
    return p.parent if p.is_file() or p.name == filename else p


def to_json_safe(value: Any) -> Any:
    """Convert ``value`` into plain JSON types (strict JSON: NaN/inf become ``None``).

    Handles mappings, sequences, sets (sorted), numpy scalars and arrays, enums (their value),
    paths, dataclasses and pandas timestamps; anything else becomes ``str(value)``.
    """
    if isinstance(value, enum.Enum):
        return to_json_safe(value.value)
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return to_json_safe(value.tolist())
    if isinstance(value, Mapping):
        return {str(k): to_json_safe(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return [to_json_safe(v) for v in sorted(value, key=str)]
    if isinstance(value, list | tuple):
        return [to_json_safe(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_json_safe(dataclasses.asdict(value))
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return str(value)


# --------------------------------------------------------------------------- results table


def validate_results(df: pd.DataFrame) -> None:
    """Check that ``df`` follows the results schema; raise ``ValueError`` saying what is wrong.

    Checks: all :data:`RESULT_COLUMNS` present (the message names the missing ones), ``norm`` in
    {linf, l2}, ``0 <= robust_correct, clean_correct <= n``, ``epsilon >= 0``.
    """
    missing = [c for c in RESULT_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"results frame is missing columns: {', '.join(missing)}")
    if df.empty:
        return
    norms = {_as_str(v) for v in df["norm"].unique()}
    unknown = sorted(norms - _NORMS)
    if unknown:
        raise ValueError(f"results frame has unknown norms {unknown}; valid: {sorted(_NORMS)}")
    n = pd.to_numeric(df["n"])
    for col in ("clean_correct", "robust_correct"):
        values = pd.to_numeric(df[col])
        if bool(((values < 0) | (values > n)).any()):
            raise ValueError(f"results column {col!r} must lie in [0, n]")
    if bool((pd.to_numeric(df["epsilon"]) < 0).any()):
        raise ValueError("results column 'epsilon' must be >= 0")


def _normalize(df: pd.DataFrame) -> pd.DataFrame:
    """Schema column order and canonical dtypes (str, int64, float64)."""
    validate_results(df)
    extras = [c for c in OPTIONAL_COLUMNS if c in df.columns]
    extras += [c for c in df.columns if c not in RESULT_COLUMNS and c not in extras]
    out = df.loc[:, RESULT_COLUMNS + extras].copy().reset_index(drop=True)
    for col in _STR_COLUMNS:
        out[col] = out[col].map(_as_str).astype("str")
    for col in _INT_COLUMNS:
        out[col] = out[col].astype("int64")
    for col in _FLOAT_COLUMNS:
        out[col] = out[col].astype("float64")
    for col in ("grad_evals", "verify_failed"):  # int, or float when some are unknown (NaN)
        if col in out.columns:
            num = pd.to_numeric(out[col])
            out[col] = num.astype("int64") if num.notna().all() else num.astype("float64")
    if "unreliable" in out.columns:
        out["unreliable"] = out["unreliable"].map(_as_bool).astype("bool")
    if TRANSFER_FROM in out.columns:  # white-box rows: "" (NaN where rows were mixed, or in CSV)
        out[TRANSFER_FROM] = out[TRANSFER_FROM].map(_as_source).astype("str")
    return out


def _as_source(value: Any) -> str:
    """``transfer_from`` as a string: the source checkpoint, ``""`` for a white-box row."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return _as_str(value)


def white_box(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``df`` that are not transfer rows (all of them without the column)."""
    if TRANSFER_FROM not in df.columns:
        return df
    return df[df[TRANSFER_FROM].fillna("").astype(str) == ""]


def _as_bool(value: Any) -> bool:
    """``unreliable`` as read back from CSV ("True"/"False") or parquet (bool)."""
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value) if value == value else False  # NaN (unknown) -> False


def write_results(df: pd.DataFrame, out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Validate ``df`` and write ``results.csv`` and ``results.parquet`` atomically into ``out_dir``.

    Returns ``(csv_path, parquet_path)``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = _normalize(df)
    csv_path, parquet_path = out / RESULTS_CSV, out / RESULTS_PARQUET
    with atomic_path(parquet_path) as tmp:
        table.to_parquet(tmp, index=False)
    with atomic_path(csv_path) as tmp:
        table.to_csv(tmp, index=False)
    logger.info("wrote %d result rows to %s and %s", len(table), csv_path, parquet_path)
    return csv_path, parquet_path


def write_table(
    df: pd.DataFrame, columns: Sequence[str], path: str | os.PathLike[str], what: str
) -> Path:
    """Write ``df``'s ``columns`` (in that order) atomically as the CSV file ``path``.

    One writer for the results directory's side tables (``certified.csv``, ``corruptions.csv``).

    Raises:
        ValueError: a column is missing (``what`` names the rows in the message).
    """
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} rows lack columns {missing}")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        df.loc[:, list(columns)].to_csv(tmp, index=False)
    logger.info("wrote %d %s rows to %s", len(df), what, out)
    return out


def _read_csv(path: Path) -> pd.DataFrame:
    # Empty strings stay strings; only numeric columns parse NaN.
    float_cols = [*_FLOAT_COLUMNS, "grad_evals", "verify_failed"]
    return pd.read_csv(
        path,
        keep_default_na=False,
        na_values={c: ["", "nan", "NaN"] for c in float_cols},
        dtype={c: "str" for c in (*_STR_COLUMNS, TRANSFER_FROM)},
    )


def read_results(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a results directory (or a results file): the parquet file if present, else the CSV.

    Raises :class:`~robustbench_sparse.errors.UserError` when neither exists.
    """
    p = Path(path)
    if p.is_file():
        table = pd.read_parquet(p) if p.suffix == ".parquet" else _read_csv(p)
    elif (p / RESULTS_PARQUET).is_file():
        table = pd.read_parquet(p / RESULTS_PARQUET)
    elif (p / RESULTS_CSV).is_file():
        table = _read_csv(p / RESULTS_CSV)
    else:
        raise UserError(f"no {RESULTS_PARQUET} or {RESULTS_CSV} in {p}; run the evaluation first")
    return _normalize(table)


# --------------------------------------------------------------------------- sidecar


def write_sidecar(out_dir: str | os.PathLike[str], sidecar: Mapping[str, Any]) -> Path:
    """Write ``sidecar`` as strict JSON (see :func:`to_json_safe`) to ``out_dir/results.json``."""
    path = _resolve(out_dir, SIDECAR_FILE) / SIDECAR_FILE
    text = json.dumps(to_json_safe(dict(sidecar)), indent=2, allow_nan=False) + "\n"
    atomic_write_text(path, text)
    logger.info("wrote %s", path)
    return path


def read_sidecar(path: str | os.PathLike[str], *, missing_ok: bool = False) -> dict[str, Any]:
    """Read ``results.json`` from a results directory (``{}`` if absent and ``missing_ok``)."""
    file = _resolve(path, SIDECAR_FILE) / SIDECAR_FILE
    if not file.is_file():
        if missing_ok:
            return {}
        raise UserError(f"no {SIDECAR_FILE} in {file.parent}")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{file} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise UserError(f"{file} must hold a JSON object")
    return data


# --------------------------------------------------------------------------- minimum norms


def make_min_norms(
    checkpoint: str,
    attack: str,
    backend: str,
    min_norm: npt.ArrayLike,
    clean_correct: npt.ArrayLike,
) -> pd.DataFrame:
    """Build the per-example minimum-norm frame of one (checkpoint, attack) from ``(N,)`` arrays."""
    norms = np.asarray(min_norm, dtype=np.float64).ravel()
    clean = np.asarray(clean_correct).astype(bool).ravel()
    if norms.shape != clean.shape:
        raise ValueError(f"min_norm and clean_correct differ: {norms.shape} vs {clean.shape}")
    return pd.DataFrame(
        {
            "checkpoint": _as_str(checkpoint),
            "attack": _as_str(attack),
            "backend": _as_str(backend),
            "example": np.arange(norms.size, dtype=np.int64),
            "min_norm": norms,
            "clean_correct": clean,
        },
        columns=MIN_NORM_COLUMNS,
    )


def _normalize_min_norms(df: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in MIN_NORM_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"min-norm frame is missing columns: {', '.join(missing)}")
    extras = [c for c in df.columns if c not in MIN_NORM_COLUMNS]
    out = df.loc[:, MIN_NORM_COLUMNS + extras].copy().reset_index(drop=True)
    for col in ("checkpoint", "attack", "backend"):
        out[col] = out[col].map(_as_str).astype("str")
    out["example"] = out["example"].astype("int64")
    out["min_norm"] = out["min_norm"].astype("float64").fillna(math.inf)
    out["clean_correct"] = out["clean_correct"].astype(bool)
    return out


def write_min_norms(out_dir: str | os.PathLike[str], df_min: pd.DataFrame) -> Path:
    """Write per-attack, per-example minimal distances to ``out_dir/attack_min_norms.parquet``."""
    path = Path(out_dir) / MIN_NORMS_FILE
    table = _normalize_min_norms(df_min)
    with atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)
    logger.info("wrote %d minimum-norm rows to %s", len(table), path)
    return path


def read_min_norms(path: str | os.PathLike[str], *, missing_ok: bool = False) -> pd.DataFrame:
    """Read ``attack_min_norms.parquet`` (empty frame with the schema if absent and ``missing_ok``)."""
    file = _resolve(path, MIN_NORMS_FILE) / MIN_NORMS_FILE
    if not file.is_file():
        if missing_ok:
            return _normalize_min_norms(pd.DataFrame({c: [] for c in MIN_NORM_COLUMNS}))
        raise UserError(f"no {MIN_NORMS_FILE} in {file.parent}")
    return _normalize_min_norms(pd.read_parquet(file))
