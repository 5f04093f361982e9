"""Every ``--flag`` an error message names is an option of each command that can show it.

:data:`SOURCES` is the registry: for each product module whose strings name a flag, the commands
that run its code (and so can show its messages). The scan reads every string of every module
(docstrings aside) and checks each flag against each of those commands' options, after the
rewriting :func:`rbs.hints.adapt_hint` does at the CLI boundary (``--set KEY=VALUE`` for a flag the
command lacks but whose config key it takes). A module that starts naming flags must be added to
the registry, so the check cannot silently skip it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from rbs.cli import build_parser, main
from rbs.hints import FLAG, adapt_hint, command_options, set_form

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("rbs", "robustbench_sparse", "attacks", "evaluations")

DATA = ("train", "run", "attack", "inspect", "prune")  # commands that read datasets
LOAD = ("inspect", "attack", "cost", "export", "speed", "prune")  # commands that load checkpoints
# the commands that read plain .pt state dicts (export and speed refuse them up front:
# rbs.commands.common.require_product_checkpoint)
PLAIN = ("inspect", "attack", "cost", "prune")
TRAIN = ("train", "run")
ATTACK = ("attack", "run")

#: module -> the commands that run its code (and can show its messages)
SOURCES: dict[str, tuple[str, ...]] = {
    "rbs.arch_flags": ("train", "attack"),
    "rbs.attack_job": ("attack",),
    "rbs.cli": ("train",),  # the --resume hint after an interrupted train; the rest is argparse's
    "rbs.commands.attack": ("attack",),
    "rbs.commands.common": ("train", "attack", "run"),
    "rbs.certify_job": ("certify", "run"),  # rbs run's [certify.*] sections build its settings
    "rbs.commands.certify": ("certify",),
    "rbs.commands.cost": ("cost",),
    "rbs.commands.misc": ("inspect",),
    "rbs.commands.prune": ("prune",),
    "rbs.commands.run": ("run",),
    "rbs.commands.train": ("train",),
    "rbs.export_cli": ("export",),
    "rbs.hints": ("train", "attack", "run"),
    "rbs.overrides": ("train", "attack", "run"),
    "rbs.speed_cli": ("speed",),
    "rbs.transfer_job": ("attack",),
    "robustbench_sparse.adversarial": TRAIN,
    "robustbench_sparse.augmentation": TRAIN,
    "robustbench_sparse.checkpoint": LOAD,
    "robustbench_sparse.checkpoint_files": LOAD,
    "robustbench_sparse.data_roots": ("attack", "prune"),
    "robustbench_sparse.dataset_sources": ("train", "run", "attack"),
    "robustbench_sparse.datasets": DATA,
    "robustbench_sparse.devices": ("train", "run", "attack"),
    "robustbench_sparse.epoch_settings": TRAIN,
    "robustbench_sparse.export": ("export",),
    "robustbench_sparse.imagefolder": DATA,
    "robustbench_sparse.model_section": TRAIN,
    "robustbench_sparse.outdir": ("train", "run", "attack"),
    "robustbench_sparse.packed_format": ("export",),
    "robustbench_sparse.posttrain.base": ("prune",),
    "robustbench_sparse.posttrain.calibrated": ("prune",),
    "robustbench_sparse.posttrain.data": ("prune",),
    "robustbench_sparse.posttrain.filtersketch": ("prune",),
    "robustbench_sparse.posttrain.job": ("prune",),
    "robustbench_sparse.provenance": ("train", "run", "attack"),
    "robustbench_sparse.sparsity.methods": TRAIN,  # create_sparsifier (rbs prune: qualified)
    "robustbench_sparse.speed": ("speed",),
    "robustbench_sparse.sparsity.config": TRAIN,  # --mask-from with another --method
    "robustbench_sparse.sparsity.methods.tost": TRAIN,
    "robustbench_sparse.sparsity.methods.latent": TRAIN,  # autosparse / campfire-ga: no DDP
    "robustbench_sparse.sparsity.methods.tost_masks": TRAIN,
    "robustbench_sparse.state_dicts": LOAD,
    "robustbench_sparse.thin_export": ("export",),
    "robustbench_sparse.threads": ("train", "run", "attack", "inspect", "export"),
    "robustbench_sparse.train_job": TRAIN,
    "robustbench_sparse.training.config": TRAIN,
    "robustbench_sparse.training.data": TRAIN,
    "robustbench_sparse.training.epoch": TRAIN,
    "robustbench_sparse.training.loop": TRAIN,
    "attacks.backends.advlib_backend": ATTACK,
    "attacks.backends.autoattack_backend": ATTACK,
    "attacks.contracts": ATTACK,
    "evaluations.engine.cell_attack": ATTACK,
    "evaluations.engine.certify_ibp": ("certify",),
    "evaluations.engine.data_checks": ATTACK,
    "evaluations.engine.grid": ATTACK,
    "evaluations.engine.masking": ATTACK,  # --masking (rbs attack, rbs run)
    "evaluations.present.report_evaluation": ATTACK,  # the report's --masking lines
    "evaluations.engine.protocols": ATTACK,
    "evaluations.engine.transfer": ("attack",),
    "evaluations.record.adversarials": ("attack",),
}

#: (module, flag) -> the commands that can show that particular message, where fewer than the
#: module's (the flag is only named on their path)
ONLY: dict[tuple[str, str], tuple[str, ...]] = {
    ("rbs.commands.common", "--normalize"): PLAIN,  # add_normalize's help
    ("rbs.commands.common", "--attack"): ("attack",),  # checked_protocol with an attack list
    ("rbs.commands.common", "--protocol"): ATTACK,
    ("rbs.commands.common", "--backend"): ("attack",),  # attack_help
    ("rbs.commands.common", "--state-dict-key"): PLAIN,
    ("robustbench_sparse.checkpoint", "--dataset"): PLAIN,
    ("robustbench_sparse.checkpoint", "--normalize"): PLAIN,
    ("robustbench_sparse.checkpoint_files", "--dataset"): PLAIN,
    ("robustbench_sparse.state_dicts", "--normalize"): PLAIN,
    ("robustbench_sparse.state_dicts", "--state-dict-key"): PLAIN,
    # only when --arch-kwargs was given (export and speed have no such flag)
    ("robustbench_sparse.checkpoint", "--arch-kwargs"): ("inspect", "attack", "cost", "prune"),
    ("robustbench_sparse.threads", "--threads"): ("train", "run", "attack", "inspect", "export"),
    ("evaluations.engine.protocols", "--attack"): ("attack",),  # given together with --protocol
    # rbs certify's own paths (the ibp import, its --json, its --out rules); rbs run writes its
    # certify results under its own output directory
    ("rbs.certify_job", "--method"): ("certify",),
    ("rbs.certify_job", "--json"): ("certify",),
    ("rbs.certify_job", "--out"): ("certify",),
    ("rbs.certify_job", "--overwrite"): ("certify",),
    ("rbs.certify_job", "--limit"): ("certify",),  # the seed policy's description
    ("evaluations.engine.grid", "--transfer-in-worst-case"): ("attack",),
    ("evaluations.engine.data_checks", "--image-size"): ("attack",),
    # inspect reads an imagefolder's class names only (a failing layout is caught there)
    ("robustbench_sparse.imagefolder", "--image-size"): ("train", "run", "attack"),
    ("robustbench_sparse.datasets", "--image-size"): ("train", "run", "attack"),
    ("evaluations.engine.data_checks", "--dataset"): ("attack",),
    ("evaluations.engine.data_checks", "--arch"): ("attack",),
    ("evaluations.engine.data_checks", "--data-root"): ("attack",),
    ("evaluations.engine.data_checks", "--normalize"): ("attack",),
    ("robustbench_sparse.datasets", "--limit"): ("attack", "run"),  # a docstring-like constant
    ("robustbench_sparse.datasets", "--mean"): TRAIN,  # --mean/--std: training only
    ("robustbench_sparse.datasets", "--std"): TRAIN,
}

#: flags of other programs that messages quote (a command line to run, not an rbs option)
NOT_RBS = {
    "attacks.backends.advlib_backend": {"--no-build-isolation", "--no-deps"},  # pip install
    "robustbench_sparse.provenance": {"--porcelain", "--untracked-files"},  # git status
    "rbs.commands.common": {"--standalone"},  # torchrun
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _strings(tree: ast.AST) -> list[ast.Constant]:
    docstrings = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        first = body[0] if isinstance(body, list) and body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
            docstrings.add(id(first.value))
    return [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings
    ]


#: ``rbs VERB ... --flag`` in one string: the flag belongs to VERB, whoever shows the message
_QUALIFIED = re.compile(r"\brbs ([a-z]+)\b[^;()]*?$")

Found = dict[str, dict[tuple[str, str | None], list[int]]]


def named_flags() -> Found:
    """Module -> (flag, the command a string names it with, or None) -> lines, every module."""
    found: Found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in _strings(ast.parse(path.read_text(encoding="utf-8"))):
                text = str(node.value)
                for match in FLAG.finditer(text):
                    before = _QUALIFIED.search(text[: match.start()])
                    key = (match.group(0), before.group(1) if before else None)
                    found.setdefault(_module_name(path), {}).setdefault(key, []).append(node.lineno)
    return found


def violations(
    found: Found, sources: dict[str, tuple[str, ...]], options: dict[str, set[str]]
) -> list[str]:
    """``module:line: --flag is not an option of rbs CMD`` for every hint a command cannot take."""
    out = []
    for module, flags in sorted(found.items()):
        if module not in sources:
            out.append(f"{module}: names {sorted({f for f, _ in flags})} but is not in SOURCES")
            continue
        for (flag, named), lines in sorted(flags.items(), key=lambda kv: (kv[0][0], kv[1])):
            if flag in NOT_RBS.get(module, set()):
                continue
            commands = (named,) if named else ONLY.get((module, flag), sources[module])
            for command in commands:
                if command not in options:
                    out.append(f"{module}: names an unknown command {command!r}")
                elif flag not in options[command] and (named or set_form(flag, command) is None):
                    out.append(f"{module}:{lines[0]}: {flag} is not an option of rbs {command}")
    return out


@pytest.fixture(scope="module")
def options() -> dict[str, set[str]]:
    return command_options(build_parser())


def test_every_flag_a_message_names_is_an_option_of_the_commands_that_show_it(
    options: dict[str, set[str]],
) -> None:
    assert violations(named_flags(), SOURCES, options) == []


def test_the_check_fails_on_a_flag_the_command_lacks(options: dict[str, set[str]]) -> None:
    found: Found = {
        "robustbench_sparse.imagefolder": {("--image-size", None): [1], ("--no-such", None): [2]}
    }
    assert violations(found, SOURCES, options) == [
        "robustbench_sparse.imagefolder:2: --no-such is not an option of rbs train",
        "robustbench_sparse.imagefolder:2: --no-such is not an option of rbs run",
        "robustbench_sparse.imagefolder:2: --no-such is not an option of rbs attack",
        "robustbench_sparse.imagefolder:2: --no-such is not an option of rbs inspect",
        "robustbench_sparse.imagefolder:2: --no-such is not an option of rbs prune",
    ]
    # a training-only flag in a module every data-reading command runs: refused for those
    # whose options and config lack it (attack, inspect), rewritten for run (--set data.mean)
    shared: Found = {"robustbench_sparse.imagefolder": {("--mean", None): [9]}}
    assert violations(shared, SOURCES, options) == [
        "robustbench_sparse.imagefolder:9: --mean is not an option of rbs attack",
        "robustbench_sparse.imagefolder:9: --mean is not an option of rbs inspect",
        "robustbench_sparse.imagefolder:9: --mean is not an option of rbs prune",
    ]
    # a flag named with its command is checked against that command only
    named: Found = {"rbs.commands.misc": {("--recipe", "run"): [3], ("--recipe", "attack"): [4]}}
    assert violations(named, SOURCES, options) == [
        "rbs.commands.misc:4: --recipe is not an option of rbs attack"
    ]
    new: Found = {"robustbench_sparse.new_module": {("--x", None): [1]}}
    assert violations(new, SOURCES, options) == [
        "robustbench_sparse.new_module: names ['--x'] but is not in SOURCES"
    ]


@pytest.mark.parametrize(
    ("command", "message", "expected"),
    [
        (
            "run",
            "pruning ends at epoch 8 but training has only 5 epochs; lower --prune-end or raise "
            "--epochs",
            "pruning ends at epoch 8 but training has only 5 epochs; lower --set sparsity.end=... "
            "or raise --epochs",
        ),
        (
            "run",
            "images of mixed sizes; pass --image-size S to resize them to S x S",
            "images of mixed sizes; pass --set data.image_size=S to resize them to S x S",
        ),
        (
            "run",
            "did you mean 8/255? (--adv-eps, [adversarial] eps)",
            "did you mean 8/255? (--set adversarial.eps=..., [adversarial] eps)",
        ),
        ("train", "lower --prune-end or raise --epochs", "lower --prune-end or raise --epochs"),
        (
            "attack",
            "images of mixed sizes; pass --image-size S to resize them to S x S",
            "images of mixed sizes; pass --image-size S to resize them to S x S",
        ),
        ("inspect", "pass --arch and --dataset", "pass --arch and --dataset"),
        ("export", "pass --nproc 2", "pass --nproc 2"),  # no config: left as is (and flagged)
    ],
)
def test_adapt_hint_words_flags_the_command_lacks_as_its_set(
    options: dict[str, set[str]], command: str, message: str, expected: str
) -> None:
    assert adapt_hint(message, command, options[command]) == expected


def test_rbs_run_shows_a_training_hint_as_its_own_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "exp.toml").write_text(
        '[train]\nepochs = 2\n[models]\ndense = true\n[adversarial]\nmethod = "pgd"\neps = 8\n'
    )
    assert main(["run", "exp.toml", "--out", "o"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "did you mean 8/255" in err
    assert "--set adversarial.eps=..." in err and "--adv-eps" not in err
    assert not (tmp_path / "o").exists()
    flags = re.findall(FLAG, err)
    assert set(flags) <= command_options(build_parser())["run"]
