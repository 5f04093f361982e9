"""The main job (``rbs run``): train dense + Campfire checkpoints, attack them, plot, report.

One experiment config (TOML; the default ships as ``evaluations/configs/default.toml``) composes
the training settings shared by every model, the list of (granularity, target) models, and the
attack grid. Output layout under ``OUT``::

    OUT/experiment.json          resolved config + fingerprint (used to resume safely)
    OUT/checkpoints/<name>/      one checkpoint per model (checkpoint.safetensors + .json)
    OUT/results/                 results.csv / .parquet, results.json, min_norms.parquet, cells/
    OUT/results/figures/         PNG + SVG figures
    OUT/results/report.{md,html}

Re-running the same command resumes: finished checkpoints and finished attack cells are reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

from evaluations.engine.attack_settings import check_class_counts
from evaluations.engine.grid import GridRun, run_grid
from evaluations.engine.masking import masking_mode
from evaluations.engine.protocols import Protocol, get_protocol, identify, resolve_attacks
from evaluations.engine.spec import AttackSpec, GridConfig
from evaluations.engine.transfer import TransferPlan
from rbs.attack_job import config_epsilons
from rbs.beyond_job import beyond_plan, run_beyond
from rbs.corruptions_job import CORRUPTIONS_KEYS
from rbs.finish import finish_run
from rbs.posttrain_plan import (
    PostTrainPlan,
    posttrain_plans,
    refuse_post_training,
    run_posttrain_plans,
)
from rbs.transfer_job import RUN_TRANSFER_KEYS, experiment_transfer, transfer_settings
from robustbench_sparse import distributed as rdist
from robustbench_sparse.checkpoint import LoadedCheckpoint
from robustbench_sparse.config import (
    ConfigSchema,
    check_keys,
    dataclass_keys,
    load_toml,
    to_jsonable,
)
from robustbench_sparse.datasets import DatasetSplits, evaluation_subset_record
from robustbench_sparse.devices import resolve_device
from robustbench_sparse.errors import UserError
from robustbench_sparse.models import create_model
from robustbench_sparse.outdir import RUN_RULES, prepare_output_dir
from robustbench_sparse.sparsity import Granularity, PruningMethod
from robustbench_sparse.train_job import (
    TRAIN_SCHEMA,
    TrainJob,
    job_with,
    load_job_dataset,
    run_train_job,
    train_job_from_config,
)
from robustbench_sparse.training.config import TrainConfig

logger = logging.getLogger(__name__)

EXPERIMENT_FILE = str(RUN_RULES.marker)
_MODELS_KEYS = ["dense", "targets", "granularities", "methods", "extra", "trainings", "posttrain"]
_EXTRA_KEYS = ["method", "target", "granularity"]
_ATTACK_KEYS = ["protocol", "attacks", "backend", "batch_size", "limit", "device", "params"]
_ATTACK_KEYS += ["masking"]  # --masking full|sample|off (evaluations.engine.masking)
_ATTACK_KEYS += list(RUN_TRANSFER_KEYS)  # rbs.transfer_job: save, craft on one model, score others
_EPS_KEYS = ["linf", "l2", "l1"]

#: the keys of an experiment config (``rbs run`` CONFIG, ``--set``): the training sections of
#: :data:`~robustbench_sparse.train_job.TRAIN_SCHEMA`, the models, the attack and its epsilons
RUN_SCHEMA = ConfigSchema(
    sections={
        **TRAIN_SCHEMA.sections,
        "recipe": None,  # a shipped recipe's description, runtime, hardware
        "models": tuple(_MODELS_KEYS),
        "attack": tuple(_ATTACK_KEYS),
        "epsilons": tuple(_EPS_KEYS),
        "corruptions": CORRUPTIONS_KEYS,  # rbs.beyond_job: common corruptions after the grid
        "certify": None,  # rbs.beyond_job: [certify.smoothing] / [certify.ibp]
    },
    scalars=("name",),
)


def default_config_text() -> str:
    """The shipped default experiment config (TOML text)."""
    return resources.files("evaluations").joinpath("configs/default.toml").read_text("utf-8")


def default_config() -> dict[str, Any]:
    """The shipped default experiment config, parsed."""
    path = resources.files("evaluations").joinpath("configs/default.toml")
    with resources.as_file(path) as p:
        return load_toml(p)


@dataclass(frozen=True)
class ModelPlan:
    """One checkpoint to train: its name and job."""

    name: str
    job: TrainJob


@dataclass(frozen=True)
class ExperimentPlan:
    """A resolved experiment: the models to train and the grid to run."""

    name: str
    models: tuple[ModelPlan, ...]
    grid: GridConfig
    config: dict[str, Any]
    protocol: Protocol | None = None  # None: hand-picked ``[attack] attacks``
    transfer: TransferPlan = field(default_factory=TransferPlan)  # [attack] transfer keys
    # [attack] masking (--masking): the black-box probe's mode; None: the default (not part of the
    # fingerprint: it changes only the masking record, which is recomputed)
    masking: str | None = None
    # [[models.posttrain]]: models made from the trained dense ones (rbs.posttrain_plan)
    posttrain: tuple[PostTrainPlan, ...] = ()

    def fingerprint(self) -> str:
        """Hash of the resolved config: a re-run with the same fingerprint resumes."""
        text = json.dumps(self.config, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _model_name(granularity: str, target: float) -> str:
    return "dense" if target == 0 else f"{granularity}-{round(target * 100):02d}"


def plan_experiment(
    config: dict[str, Any] | None = None,
    *,
    overrides: dict[str, Any] | None = None,
    protocol: str | None = None,
) -> ExperimentPlan:
    """Resolve a config dict (default: the shipped one) into an :class:`ExperimentPlan`.

    ``overrides`` patches top-level sections key by key (e.g. ``{"attack": {"limit": 100}}``).
    ``protocol`` (``rbs run --protocol``) replaces the config's ``[attack] protocol`` / ``attacks``
    (and its ``[attack.params]``: a protocol brings its own parameters).
    """
    cfg = _patched(config if config is not None else default_config(), overrides)
    models_cfg, attack_cfg, eps_cfg = _checked_sections(cfg, protocol)
    base = train_job_from_config(
        {k: cfg[k] for k in ("data", "model", "train", "sparsity", "adversarial") if k in cfg}
    )
    plans = _model_plans(base, models_cfg)
    post = _posttrain(base, plans, models_cfg.get("posttrain"))
    chosen, grid = _attack_grid(attack_cfg, eps_cfg, seed=base.train.seed)
    transfer = experiment_transfer(attack_cfg, [p.name for p in plans] + [p.name for p in post])
    resolved = {
        "name": cfg.get("name", "experiment"),
        "models": [{"name": p.name, "job": to_jsonable(p.job)} for p in plans],
        "grid": to_jsonable(grid),
    }
    if post:  # absent when unset: earlier fingerprints stay
        resolved["posttrain"] = [p.record() for p in post]
    if transfer_settings(attack_cfg):  # absent when unset: earlier fingerprints stay
        resolved["transfer"] = transfer_settings(attack_cfg)
    beyond_plan(cfg)  # [corruptions] / [certify] checked before anything trains
    for section in ("corruptions", "certify"):  # absent when unset: earlier fingerprints stay
        if section in cfg:
            resolved[section] = cfg[section]
    return ExperimentPlan(
        str(cfg.get("name", "experiment")),
        tuple(plans),
        grid,
        resolved,
        chosen if chosen is not None else identify(grid.attacks),
        transfer,
        _masking(attack_cfg.get("masking")),
        tuple(post),
    )


def _posttrain(base: TrainJob, plans: list[ModelPlan], entries: Any) -> list[PostTrainPlan]:
    """``[[models.posttrain]]`` against the planned dense models (:mod:`rbs.posttrain_plan`)."""
    dense = [
        (p.name, p.name[: -len("dense")])
        for p in plans
        if p.job.sparsity.dense and p.name.endswith("dense")
    ]
    return posttrain_plans(
        entries, dense, [p.name for p in plans], base.train.seed, base.train.device
    )


def _masking(value: Any) -> str | None:
    """``[attack] masking`` checked (None when absent)."""
    return None if value is None else masking_mode(str(value))


def _patched(config: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """A deep copy of ``config`` with ``overrides`` applied section by section (``None``: unset)."""
    cfg: dict[str, Any] = json.loads(json.dumps(config))
    for section, values in (overrides or {}).items():
        if isinstance(values, dict):
            cfg.setdefault(section, {}).update({k: v for k, v in values.items() if v is not None})
        elif values is not None:
            cfg[section] = values
    return cfg


def _checked_sections(
    cfg: dict[str, Any], protocol: str | None
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``[models]``, ``[attack]``, ``[epsilons]``, keys checked; ``protocol`` applied."""
    check_keys("experiment", cfg, RUN_SCHEMA.top_keys())
    models_cfg = cfg.get("models", {})
    check_keys("models", models_cfg, _MODELS_KEYS)
    attack_cfg = cfg.get("attack", {})
    check_keys("attack", attack_cfg, _ATTACK_KEYS)
    if protocol is not None:
        get_protocol(protocol)  # an unknown name fails before anything else
        for key in ("attacks", "params"):
            attack_cfg.pop(key, None)
        attack_cfg["protocol"] = protocol
    eps_cfg = cfg.get("epsilons", {})
    check_keys("epsilons", eps_cfg, _EPS_KEYS)
    return models_cfg, attack_cfg, eps_cfg


def _model_plans(base: TrainJob, models_cfg: dict[str, Any]) -> list[ModelPlan]:
    """``[models]``: the dense baseline, methods x granularities x targets, extras, trainings."""
    targets = [float(t) for t in models_cfg.get("targets", [0.5, 0.7, 0.9])]
    granularities = [
        Granularity(g) if g in {m.value for m in Granularity} else _bad_granularity(g)
        for g in models_cfg.get("granularities", ["window", "channel", "combined"])
    ]
    plans: list[ModelPlan] = []
    if models_cfg.get("dense", True):
        dense_job = job_with(base, sparsity=_with_target(base.sparsity, 0.0, None), name="dense")
        plans.append(ModelPlan("dense", dense_job))
    # [models] methods: campfire (campfire-ga, tost on Campfire masks) use the granularities;
    # the others their own.
    methods = [
        PruningMethod.parse(m) for m in models_cfg.get("methods", [base.sparsity.method.value])
    ]
    for method in methods:
        refuse_post_training(method.value, "[models] methods")
        method_sp = _with_method(base.sparsity, method)
        structured = method in (PruningMethod.CAMPFIRE, PruningMethod.CAMPFIRE_GA) or (
            method is PruningMethod.TOST  # on a Campfire mask of each granularity
            and method_sp.mask_from is None
            and method_sp.tost_mask == "campfire"
        )
        for granularity in granularities if structured else [None]:
            for target in targets:
                if not 0 < target < 1:
                    raise UserError(f"[models] targets must be in (0, 1); got {target}")
                sp = _with_target(method_sp, target, granularity)
                name = _model_name(sp.label, target)
                plans.append(ModelPlan(name, job_with(base, sparsity=sp, name=name)))
    plans.extend(_extra_models(base, models_cfg.get("extra", [])))
    plans = _expand_trainings(base, plans, models_cfg.get("trainings"))
    if not plans:
        raise UserError("the experiment trains no model: set [models] dense or targets")
    return plans


def _attack_grid(
    attack_cfg: dict[str, Any], eps_cfg: dict[str, Any], *, seed: int
) -> tuple[Protocol | None, GridConfig]:
    """``[attack]`` + ``[epsilons]`` -> (protocol, None for hand-picked attacks; the grid)."""
    params = attack_cfg.get("params", {})
    if not isinstance(params, dict):
        raise UserError("[attack.params] must be a table of per-attack tables")
    if "protocol" in attack_cfg and "attacks" in attack_cfg:
        raise UserError("[attack] give protocol or attacks, not both")
    chosen: Protocol | None = None
    if "attacks" in attack_cfg:
        names = list(attack_cfg["attacks"])
    else:
        chosen, names, params = resolve_attacks(
            str(attack_cfg.get("protocol", "quick")),
            None,
            params,
            l2_grid_given="l2" in eps_cfg,
            l1_grid_given="l1" in eps_cfg,
        )
    for key in params:
        if key not in names:
            raise UserError(f"[attack.params.{key}] configures an attack that is not in attacks")
    backend = str(attack_cfg.get("backend", "native"))
    specs = tuple(
        AttackSpec(n, backend, tuple(sorted(dict(params.get(n, {})).items()))) for n in names
    )
    linf, l2, l1 = (
        tuple(config_epsilons(eps_cfg[n], f"[epsilons] {n}")) if n in eps_cfg else None
        for n in ("linf", "l2", "l1")
    )
    grid = GridConfig(
        attacks=specs,
        linf_epsilons=linf,
        l2_epsilons=l2,
        l1_epsilons=l1,
        batch_size=int(attack_cfg.get("batch_size", 500)),
        limit=attack_cfg.get("limit"),
        device=str(attack_cfg.get("device", "cpu")),
        seed=seed,
    )
    for spec in specs:
        spec.build()  # fail early on unknown attacks / parameters
    return chosen, grid


def _extra_models(base: TrainJob, extra: Any) -> list[ModelPlan]:
    """``[[models.extra]]`` tables: single models ``{method, target, granularity}`` (e.g. hydra-70)."""
    if not isinstance(extra, list):
        raise UserError("[models] extra must be a list of tables {method, target, granularity}")
    plans: list[ModelPlan] = []
    for item in extra:
        if not isinstance(item, dict):
            raise UserError("[models] extra must be a list of tables {method, target, granularity}")
        check_keys("models.extra", item, _EXTRA_KEYS)
        target = float(item.get("target", 0.7))
        if not 0 < target < 1:
            raise UserError(f"[models.extra] target must be in (0, 1); got {target}")
        g = item.get("granularity")
        granularity = (
            None
            if g is None
            else Granularity(g)
            if g in {m.value for m in Granularity}
            else _bad_granularity(g)
        )
        refuse_post_training(str(item.get("method", "campfire")), "[models.extra]")
        sp = _with_method(base.sparsity, PruningMethod.parse(item.get("method", "campfire")))
        sp = _with_target(sp, target, granularity)
        name = _model_name(sp.label, target)
        plans.append(ModelPlan(name, job_with(base, sparsity=sp, name=name)))
    return plans


def _expand_trainings(base: TrainJob, plans: list[ModelPlan], trainings: Any) -> list[ModelPlan]:
    """``[models] trainings = ["none", "pgd", "trades"]``: every model once per training method.

    The threat model comes from the ``[adversarial]`` section; standard (``none``) models keep
    their names, adversarially trained ones are prefixed with the method (``pgd-window-70``).
    Without ``trainings`` every model uses ``[adversarial] method`` as given (default none).
    """
    if trainings is None:
        return plans
    if not isinstance(trainings, list) or not trainings:
        raise UserError('[models] trainings must be a non-empty list, e.g. ["none", "pgd"]')
    out: list[ModelPlan] = []
    for method in trainings:
        for p in plans:
            adv, train_keys = _training_for(base.adversarial, method)
            name = p.name if adv.method.value == "none" else f"{adv.method.value}-{p.name}"
            train = replace(p.job.train, **train_keys) if train_keys else p.job.train
            out.append(ModelPlan(name, job_with(p.job, adversarial=adv, train=train, name=name)))
    return out


def _training_for(adversarial: Any, training: Any) -> tuple[Any, dict[str, Any]]:
    """One entry of ``[models] trainings``: a method name (the ``[adversarial]`` section with that
    method) or a table of ``[adversarial]`` keys laid over the section, e.g.
    ``{ method = "gaussian", sigma = 0.25 }``, so one config can hold methods whose keys exclude
    each other (a noise sigma, an attack budget). A table's ``train`` sub-table holds ``[train]``
    keys for these models only (IBP needs its own recipe: more, smaller steps, Adam), returned
    second (empty for a name)."""
    if isinstance(training, str):
        return replace(adversarial, method=training), {}
    if not isinstance(training, dict) or "method" not in training:
        raise UserError(
            f"[models] trainings: {training!r} is neither a method name nor a table with a "
            'method, e.g. { method = "gaussian", sigma = 0.25 }'
        )
    keys = dict(training)
    train_keys = keys.pop("train", {})
    if not isinstance(train_keys, dict):
        raise UserError(
            f"[models] trainings: train = {train_keys!r} must be a table of [train] keys, e.g. "
            "train = { epochs = 60, batch_size = 16 }"
        )
    unknown = sorted(set(keys) - {f.name for f in fields(adversarial)})
    if unknown:
        raise UserError(f"[models] trainings: unknown [adversarial] key {unknown[0]!r}")
    unknown = sorted(set(train_keys) - set(dataclass_keys(TrainConfig)))
    if unknown:
        raise UserError(
            f"[models] trainings: unknown [train] key {unknown[0]!r} in train = {{...}}"
        )
    return replace(adversarial, **keys), train_keys


def _bad_granularity(g: str) -> Granularity:
    valid = ", ".join(m.value for m in Granularity)
    raise UserError(f"[models] unknown granularity {g!r}; valid: {valid}")


def _with_method(sp: Any, method: PruningMethod) -> Any:
    from dataclasses import replace

    return replace(sp, method=method)


def _with_target(sp: Any, target: float, granularity: Granularity | None) -> Any:
    from dataclasses import replace

    changes: dict[str, Any] = {"target": target, "initial": min(sp.initial, target)}
    if granularity is not None:
        changes["granularity"] = granularity
    return replace(sp, **changes)


def prepare_experiment_dir(
    out: Path, plan: ExperimentPlan, *, overwrite: bool, resume: bool
) -> bool:
    """Apply the output rules (:data:`~robustbench_sparse.outdir.RUN_RULES`); True: resuming."""
    return prepare_output_dir(
        out,
        RUN_RULES,
        overwrite=overwrite,
        resume=resume,
        fingerprint=plan.fingerprint(),
        record={"plan": plan.config},
    )


@dataclass
class ExperimentOutcome:
    """Where things went and the key numbers."""

    out_dir: Path
    results_dir: Path
    report_html: Path
    report_md: Path
    grid: GridRun
    seconds: float


def _checked_data(plan: ExperimentPlan) -> DatasetSplits:
    """The experiment's data, once devices and architectures are known to work.

    Checked before the output directory is touched: a mistyped config must not leave a directory
    that then blocks the corrected one. Nothing is downloaded for the architecture check.
    """
    for device in {plan.grid.device, *(m.job.train.device for m in plan.models)}:
        resolve_device(device)
    data = load_job_dataset(plan.models[0].job)
    for m in plan.models:  # the training budgets' units, before any model trains
        m.job.adversarial.check_budget(data.info.input_shape)
    # an attack whose loss needs more classes than the data set has, before any model trains
    check_class_counts(plan.grid.attacks, [data.info.num_classes])
    archs: list[tuple[str, dict[str, Any]]] = []
    for m in plan.models:
        if (m.job.arch, dict(m.job.arch_kwargs)) not in archs:
            archs.append((m.job.arch, dict(m.job.arch_kwargs)))
    for arch, kwargs in archs:  # unknown names and keywords fail here
        if "pretrained" in kwargs:
            kwargs["pretrained"] = False
        create_model(
            arch,
            num_classes=data.info.num_classes,
            in_channels=data.info.input_shape[0],
            input_shape=data.info.input_shape,  # a user class's logits are checked here
            **kwargs,
        )
    return data


def run_experiment(
    plan: ExperimentPlan,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    command: str | None = None,
) -> ExperimentOutcome:
    """Train every model of ``plan``, run the attack grid, write figures and the report."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    data = _checked_data(plan)  # before the output directory is touched
    beyond = beyond_plan(plan.config)  # [corruptions] / [certify] (checked by plan_experiment)
    rdist.on_main(lambda: prepare_experiment_dir(out, plan, overwrite=overwrite, resume=resume))
    checkpoints: list[LoadedCheckpoint] = []
    for i, model in enumerate(plan.models, 1):
        logger.info("[%d/%d] training %s", i, len(plan.models), model.name)
        ckpt = run_train_job(
            model.job,
            out / "checkpoints" / model.name,
            resume=True,
            progress=progress,
            data=data,
        )
        checkpoints.append(ckpt)
    checkpoints += run_posttrain_plans(
        plan.posttrain, out / "checkpoints", plan.models[0].job.data.data_root
    )
    results_dir = out / "results"
    grid_run = run_grid(
        checkpoints,
        data.test,
        plan.grid,
        out_dir=results_dir,
        progress=progress,
        transfer=plan.transfer,
    )
    if beyond and rdist.is_main():  # corruptions.csv / certified.csv, before the report
        run_beyond(beyond, checkpoints, data.test, results_dir, dataset=data.info.name)
    finished = finish_run(
        results_dir,
        grid_run,
        checkpoints,
        data.test,
        plan.grid,
        plan.protocol,
        header={
            "experiment": plan.name,
            "config": plan.config,
            "transfer": plan.transfer.describe(),
        },
        # The seeds that matter: training (data subset, order, init) and each attack's own.
        seeds={"train": plan.models[0].job.train.seed},
        evaluation_subset={data.info.name: evaluation_subset_record(data.test, plan.grid.limit)},
        t0=t0,
        command=command,
        masking=plan.masking,
    )
    failed = [k for k, v in finished.invariants.items() if not v.get("passed", False)]
    if failed:
        logger.warning("invariant checks FAILED: %s (see the report)", ", ".join(failed))
    md = finished.report_md or results_dir / "report.md"
    html = finished.report_html or results_dir / "report.html"
    return ExperimentOutcome(out, results_dir, html, md, grid_run, time.perf_counter() - t0)
