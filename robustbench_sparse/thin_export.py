"""``rbs export --format thin``: a checkpoint directory holding the thinned model.

:func:`export_thin_checkpoint` loads a checkpoint, thins it with
:func:`robustbench_sparse.thin.thin_model` (checked allclose to the masked model) and writes a
checkpoint that loads wherever a checkpoint loads: the changed module widths are recorded in
``checkpoint.json`` (``thin.widths``) and
:func:`~robustbench_sparse.models.widths.apply_widths` rebuilds them on load.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from robustbench_sparse.checkpoint import load_checkpoint, save_checkpoint
from robustbench_sparse.checkpoint_files import resolve_checkpoint_files, sha256_file
from robustbench_sparse.errors import UserError
from robustbench_sparse.sparsity.detect import measured_sparsity_report
from robustbench_sparse.thin import ThinResult, thin_model

__all__ = ["export_thin_checkpoint"]


def export_thin_checkpoint(
    source: str | Path,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    arch: str | None = None,
    trust_arch: bool = False,
) -> ThinResult:
    """Write the thin form of checkpoint ``source`` as a checkpoint directory ``out_dir``.

    The result loads wherever a checkpoint loads (``load_checkpoint``, ``rbs attack``,
    ``rbs inspect``, ``rbs speed``): its ``checkpoint.json`` is the source's metadata plus
    ``thin`` (the changed module widths, channels removed, parameter and MAC counts, the source
    and its SHA-256) and a ``name`` ending in ``-thin``; its sparsity report is measured from
    its own weights, and its masks are its nonzeros in the layers the source pruned. ``arch`` /
    ``trust_arch``: as for :func:`~robustbench_sparse.checkpoint.load_checkpoint` (a checkpoint
    of the user's own class is rebuilt only when named or trusted).

    Raises:
        UserError: ``out_dir`` exists and is not empty (without ``overwrite``), a source that
            does not load, or a thin model that would not match it (see :func:`thin_model`).
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise UserError(f"{out} exists and is not empty; pass --overwrite to replace it")
    if out.exists() and out.resolve() == Path(source).resolve():
        raise UserError(f"--out {out} is the source checkpoint; choose another directory")
    ckpt = load_checkpoint(source, arch=arch, trust_arch=trust_arch)
    if ckpt.meta.get("thin"):
        raise UserError(f"{source} is already a thin export; thin its source instead")
    weights, _ = resolve_checkpoint_files(source)
    shape = tuple(int(v) for v in ckpt.info.input_shape)
    result = thin_model(ckpt.model, shape)
    model = result.model
    pruned = [str(n) for n in ckpt.meta.get("pruned_layers") or []]
    params = dict(model.named_parameters())
    masks = {n: params[n].detach() != 0 for n in pruned if n in params}
    report = measured_sparsity_report(model)
    meta = {k: v for k, v in ckpt.meta.items() if k not in ("format", "format_version")}
    meta.pop("weights_sha256", None)
    meta["name"] = f"{ckpt.name}-thin"
    meta["sparsity_report"] = report.to_dict()
    meta["thin"] = {
        "source": str(source),
        "source_sha256": sha256_file(weights),
        "input_shape": list(shape),
        **result.summary(),
    }
    if out.exists():  # --overwrite, and the thin model is ready: only now replace it
        if out.is_dir():
            shutil.rmtree(out)
        else:
            out.unlink()
    save_checkpoint(out, model, meta, masks)
    return result
