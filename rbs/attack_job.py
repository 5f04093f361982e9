"""``rbs attack``: load checkpoints, run the grid into a results directory, plot and report.

Output rules: a non-empty results directory is reused only when it holds a run of the same request
(same fingerprint: re-running the same command resumes and skips finished cells) or with
``resume``; anything else is refused unless ``overwrite``. Everything that can be checked up front
(request, checkpoints, device, data) is checked before the directory is touched, so a mistyped
command leaves no half-made directory behind.

Under ``torchrun`` the grid is sharded across ranks (see :mod:`evaluations.engine.grid`); only rank 0
prepares the directory and writes the sidecar, figures and report.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from attacks.params import parse_epsilon
from evaluations.engine.attack_settings import check_class_counts
from evaluations.engine.data_checks import check_input_shape
from evaluations.engine.grid import GridRun, run_grid
from evaluations.engine.masking import masking_mode
from evaluations.engine.protocols import Protocol, identify, resolve_attacks
from evaluations.engine.spec import AttackSpec, GridConfig
from rbs.corruptions_job import PROTOCOL as CORRUPTIONS
from rbs.corruptions_job import (
    corruption_settings,
    run_corruptions_job,
    write_corruptions_sidecar,
)
from rbs.finish import finish_run
from rbs.transfer_job import checkpoints_with_source, drop_default_transfer_keys, transfer_plan
from robustbench_sparse import distributed as rdist
from robustbench_sparse.checkpoint import LoadedCheckpoint, load_checkpoint
from robustbench_sparse.config import ConfigSchema, coerce, to_jsonable
from robustbench_sparse.data_roots import load_evaluation_split
from robustbench_sparse.datasets import evaluation_subset_record
from robustbench_sparse.devices import resolve_device
from robustbench_sparse.errors import UserError
from robustbench_sparse.outdir import ATTACK_RULES, prepare_output_dir

logger = logging.getLogger(__name__)

REQUEST_FILE = str(ATTACK_RULES.marker)


@dataclass(frozen=True)
class AttackRunRequest:
    """Everything ``rbs attack`` was asked to do."""

    checkpoints: tuple[Path, ...]
    attacks: tuple[str, ...] = ("fgsm", "pgd", "cw")
    backend: str = "native"
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    linf_epsilons: list[float] | None = None
    l2_epsilons: list[float] | None = None
    l1_epsilons: list[float] | None = None
    limit: int | None = None
    batch_size: int = 500
    device: str = "cpu"
    dataset: str | None = None
    data_root: str | None = None
    download: bool = False
    image_size: int | None = None  # imagefolder: resize the test images to S x S
    arch: str | None = None
    arch_kwargs: dict[str, Any] | None = None  # plain state dicts: the constructor keywords
    trust_arch: bool = False  # rebuild checkpoints of a user class without --arch naming it
    normalize: str | None = None
    state_dict_key: str | None = None  # plain .pt/.pth: the entry holding the weights
    report: bool = True
    seed: int = 0
    protocol: str | None = None  # quick | standard | thorough; replaces ``attacks`` when given
    masking: str | None = None  # --masking full | sample | off (None: sample)
    # transfer (rbs.transfer_job): write adversarials; score saved ones; craft on one checkpoint
    save_adversarials: bool = False
    adversarials: tuple[Path, ...] = ()
    transfer_from: Path | None = None
    transfer_in_worst_case: bool = False
    # protocol "corruptions" (rbs.corruptions_job): the [corruptions] table (names, severities, ...)
    corruptions: dict[str, Any] | None = None

    def attack_plan(self) -> tuple[Protocol | None, list[str], dict[str, dict[str, Any]]]:
        """(protocol, attack names, per-attack params): ``protocol`` wins over ``attacks``."""
        if self.protocol is None:
            return None, list(dict.fromkeys(self.attacks)), dict(self.params)
        return resolve_attacks(
            self.protocol,
            None,
            self.params,
            l2_grid_given=self.l2_epsilons is not None,
            l1_grid_given=self.l1_epsilons is not None,
        )

    def grid(self) -> GridConfig:
        """The :class:`GridConfig` this request describes (validated)."""
        _, names, params = self.attack_plan()
        for key in params:
            if key not in names:
                raise UserError(f"--param {key}.*: attack {key!r} is not among --attack")
        if self.limit is not None and self.limit < 1:
            raise UserError(f"--limit must be >= 1 (got {self.limit})")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be >= 1 (got {self.batch_size})")
        specs = tuple(
            AttackSpec(a, self.backend, tuple(sorted(params.get(a, {}).items()))) for a in names
        )
        for spec in specs:
            spec.build()
        return GridConfig(
            attacks=specs,
            linf_epsilons=tuple(self.linf_epsilons) if self.linf_epsilons is not None else None,
            l2_epsilons=tuple(self.l2_epsilons) if self.l2_epsilons is not None else None,
            l1_epsilons=tuple(self.l1_epsilons) if self.l1_epsilons is not None else None,
            batch_size=self.batch_size,
            limit=self.limit,
            device=self.device,
            seed=self.seed,
        )

    def fingerprint(self) -> str:
        """Hash of the request (resolved checkpoint paths included)."""
        payload = to_jsonable(self)
        payload["checkpoints"] = [str(Path(p).resolve()) for p in self.checkpoints]
        payload.pop("report", None)
        payload.pop("masking", None)  # changes only the masking record, which is recomputed
        drop_default_transfer_keys(payload)  # keeps fingerprints of earlier runs
        if payload.get("adversarials"):
            payload["adversarials"] = [str(Path(p).resolve()) for p in self.adversarials]
        if payload.get("transfer_from"):
            payload["transfer_from"] = str(Path(str(self.transfer_from)).resolve())
        payload.pop("trust_arch", None)  # permission to import, not a setting of the run
        if payload.get("arch_kwargs") is None:  # keeps fingerprints of earlier runs
            payload.pop("arch_kwargs", None)
        for key in (
            "normalize",
            "protocol",
            "state_dict_key",
            "l1_epsilons",
            "image_size",
            "corruptions",
        ):
            if payload.get(key) is None:  # keeps fingerprints of earlier runs
                payload.pop(key, None)
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


#: the keys of an ``rbs attack`` config (``--config``, ``--set``): ``[attack]`` and ``[epsilons]``
#: as in an ``rbs run`` experiment, ``[data]`` the evaluation data, ``[model]`` how to read a plain
#: state dict
ATTACK_SCHEMA = ConfigSchema(
    sections={
        "attack": (
            "checkpoints",
            "attacks",
            "protocol",
            "masking",
            "backend",
            "params",
            "limit",
            "batch_size",
            "device",
            "seed",
            "report",
            "save_adversarials",
            "adversarials",
            "transfer_from",
            "transfer_in_worst_case",
        ),
        "epsilons": ("linf", "l2", "l1"),
        "data": ("dataset", "data_root", "download", "image_size"),
        "model": ("arch", "kwargs", "trust_arch", "normalize", "state_dict_key"),
        "corruptions": ("names", "severities", "extra", "seed"),
    }
)
#: config key -> request field (the same name unless listed)
_RENAMED = {
    ("epsilons", "linf"): "linf_epsilons",
    ("epsilons", "l2"): "l2_epsilons",
    ("epsilons", "l1"): "l1_epsilons",
    ("model", "kwargs"): "arch_kwargs",
}


def request_from_config(config: Mapping[str, Any]) -> AttackRunRequest:
    """Build the request from a nested config dict (:data:`ATTACK_SCHEMA`; defaults: the fields')."""
    ATTACK_SCHEMA.check(config)
    hints = typing.get_type_hints(AttackRunRequest)
    fields: dict[str, Any] = {}
    for section, keys in ATTACK_SCHEMA.sections.items():
        table = config.get(section, {})
        if section == "corruptions":
            if table:
                fields["corruptions"] = dict(table)
                corruption_settings(table)  # unknown names / severities fail here
            continue
        if not isinstance(table, Mapping):
            raise UserError(f"[{section}] must be a table of keys, got {table!r}")
        for key in keys or ():
            if key not in table:
                continue
            name, where = _RENAMED.get((section, key), key), f"[{section}] {key}"
            value = table[key]
            if section == "epsilons":
                value = config_epsilons(value, where)
            elif key in ("checkpoints", "adversarials"):
                value = [Path(str(p)) for p in (value if isinstance(value, list) else [value])]
            elif key == "transfer_from" and value is not None:
                value = Path(str(value))
            fields[name] = coerce(value, hints[name], where)
    if "protocol" in fields and "attacks" in fields:
        raise UserError("[attack] give protocol or attacks, not both")
    if fields.get("masking") is not None:
        masking_mode(fields["masking"])  # an unknown mode fails before anything runs
    if fields.get("adversarials") and "protocol" not in fields and "attacks" not in fields:
        fields["attacks"] = ()  # score the saved adversarials only (unless attacks are asked)
    if not fields.get("checkpoints"):
        raise UserError(
            "the following arguments are required: --checkpoint (or [attack] checkpoints)"
        )
    return AttackRunRequest(**fields)


def config_epsilons(values: Any, where: str) -> list[float]:
    """An epsilon grid of a config: numbers and fractions (``[0, "8/255"]``) -> floats."""
    if not isinstance(values, (list, tuple)):
        raise UserError(f"{where}: expected a list of epsilons, got {values!r}")
    return [parse_epsilon(v, what=where) for v in values]


@dataclass
class AttackRunOutcome:
    """Where ``rbs attack`` wrote things."""

    results_dir: Path
    report_html: Path | None
    grid: GridRun | None  # None: protocol "corruptions" (no attack grid)
    results_file: str = "results.csv"


def prepare_results_dir(out: Path, fingerprint: str, *, overwrite: bool, resume: bool) -> None:
    """Apply the output rules (:data:`~robustbench_sparse.outdir.ATTACK_RULES`)."""
    prepare_output_dir(
        out, ATTACK_RULES, overwrite=overwrite, resume=resume, fingerprint=fingerprint
    )


def load_request_checkpoints(request: AttackRunRequest) -> list[LoadedCheckpoint]:
    """Load every checkpoint of the request (plain state dicts need ``arch`` + ``dataset``)."""
    return [
        load_checkpoint(
            p,
            arch=request.arch,
            dataset=request.dataset,
            arch_kwargs=request.arch_kwargs,
            data_root=request.data_root,
            normalize=request.normalize,
            trust_arch=request.trust_arch,
            state_dict_key=request.state_dict_key,
        )
        for p in request.checkpoints
    ]


def _recorded_image_size(checkpoints: list[LoadedCheckpoint], dataset: str) -> int | None:
    """The ``--image-size`` an imagefolder checkpoint was trained with (``None``: native size)."""
    if dataset != "imagefolder":
        return None
    for ckpt in checkpoints:
        size = (ckpt.meta.get("data") or {}).get("image_size")
        if ckpt.info.name == dataset and size is not None:
            return int(size)
    return None


def _recorded_roots(checkpoints: list[LoadedCheckpoint], dataset: str) -> dict[str, str | None]:
    """Checkpoint name -> the data root it recorded at training, for those evaluated on ``dataset``
    (a checkpoint evaluated on another dataset than its own recorded nothing that applies)."""
    return {
        c.name: (c.meta.get("data_root") if c.meta.get("dataset") == dataset else None)
        for c in checkpoints
        if c.info.name == dataset
    }


def run_attack_command(
    request: AttackRunRequest,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    command: str | None = None,
) -> AttackRunOutcome:
    """Run ``rbs attack``: grid into ``out_dir``, sidecar, figures and report."""
    if request.protocol == CORRUPTIONS:
        return _run_corruptions(request, Path(out_dir), overwrite, resume, command)
    if request.corruptions:
        raise UserError(
            "--corruption / --extra-corruptions ([corruptions] settings) need --protocol corruptions"
        )
    t0 = time.perf_counter()
    grid = request.grid()
    paths, source_index = checkpoints_with_source(request.checkpoints, request.transfer_from)
    checkpoints = load_request_checkpoints(replace(request, checkpoints=paths))
    datasets = {c.info.name for c in checkpoints}
    resolve_device(grid.device)  # a missing CUDA fails here, before the output is touched
    data = {
        name: load_evaluation_split(
            name,
            _recorded_roots(checkpoints, name),
            request.data_root,
            download=request.download,
            limit=request.limit,
            augment=False,
            image_size=request.image_size or _recorded_image_size(checkpoints, name),
        )
        for name in sorted(datasets)
    }
    # an attack whose loss needs more classes than a checkpoint has: refused here, in one line
    check_class_counts(grid.attacks, [c.info.num_classes for c in checkpoints])
    for ckpt in checkpoints:  # data of another shape: refused before the output is touched
        test = data[ckpt.info.name]
        if len(test):  # type: ignore[arg-type]
            first = test[0][0]
            check_input_shape(ckpt.name, ckpt.meta, ckpt.info.name, first.unsqueeze(0))
    plan = transfer_plan(  # saved adversarials are checked before the output is touched
        save=request.save_adversarials,
        source_index=source_index,
        checkpoints=checkpoints,
        adversarials=request.adversarials,
        data=data,
        in_worst_case=request.transfer_in_worst_case,
    )
    out = Path(out_dir)
    rdist.on_main(
        lambda: prepare_results_dir(out, request.fingerprint(), overwrite=overwrite, resume=resume)
    )
    grid_run = run_grid(checkpoints, data, grid, out_dir=out, progress=progress, transfer=plan)
    finished = finish_run(
        out,
        grid_run,
        checkpoints,
        data,
        grid,
        request.attack_plan()[0] or identify(grid.attacks),
        header={
            "request": to_jsonable(request),
            "config": to_jsonable(grid),
            "transfer": plan.describe(),
        },
        seeds={},
        evaluation_subset={
            name: evaluation_subset_record(test, request.limit) for name, test in data.items()
        },
        t0=t0,
        command=command,
        report=request.report,
        masking=request.masking,
    )
    return AttackRunOutcome(out, finished.report_html, grid_run)


def _run_corruptions(
    request: AttackRunRequest, out: Path, overwrite: bool, resume: bool, command: str | None
) -> AttackRunOutcome:
    """``rbs attack --protocol corruptions``: corruptions.csv, corruptions.json and a report."""
    from evaluations.present.report_beyond import write_beyond_report

    if request.attacks != AttackRunRequest.attacks or request.params:
        raise UserError("--protocol corruptions runs no attacks: drop --attack / --param")
    if request.limit is not None and request.limit < 1:
        raise UserError(f"--limit must be >= 1 (got {request.limit})")
    table = {
        **(request.corruptions or {}),
        "batch_size": request.batch_size,
        "limit": request.limit,
        "device": request.device,
    }
    settings = corruption_settings(table)
    checkpoints = load_request_checkpoints(request)
    resolve_device(request.device)
    data = {
        name: load_evaluation_split(
            name,
            _recorded_roots(checkpoints, name),
            request.data_root,
            download=request.download,
            limit=request.limit,
            augment=False,
            image_size=request.image_size or _recorded_image_size(checkpoints, name),
        )
        for name in sorted({c.info.name for c in checkpoints})
    }
    prepare_results_dir(out, request.fingerprint(), overwrite=overwrite, resume=resume)
    _, record = run_corruptions_job(checkpoints, data, settings, out)
    write_corruptions_sidecar(out, {"command": command, "request": to_jsonable(request), **record})
    html = write_beyond_report(out, command=command)[1] if request.report else None
    return AttackRunOutcome(out, html, None, results_file="corruptions.csv")
