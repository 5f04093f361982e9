"""Every command in README.md is real: it parses, and the cheap ones run.

* Every shell command in the README's fenced ``bash`` blocks (backslash continuations joined, comments
  dropped, split on ``&&`` / ``;``) and every backticked ``rbs ...`` in its prose and tables is turned
  into an argv (placeholders such as ``DIR`` and optional ``[...]`` parts expanded, see
  :func:`expand_span`) and must be accepted by :func:`rbs.cli.build_parser`, so the
  README never documents a flag that does not exist. ``torchrun ... -m rbs ...`` and
  ``python -m rbs ...`` count as ``rbs``; every other command must be a known one.
* The two quickstart commands are pinned, and ``.ci/run`` runs the README's test command and its main
  job.
* The cheap commands run in-process on tiny settings: ``rbs models``, ``rbs recipes``,
  ``rbs run --print-default-config``, ``--help`` of every subcommand, ``rbs train`` (the README's
  command plus tiny overrides), ``rbs inspect``, ``rbs export ... --verify``, ``rbs attack``,
  ``rbs plot``, ``rbs report``, and the README's Python snippet (on synthetic data). The CIFAR-10
  commands (no data here, and meant for GPUs) only parse, and fail cleanly without the data.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from rbs.cli import build_parser, main
from robustbench_sparse.recipes import recipe_names
from tests.core_helpers import single_thread

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CI_RUN = ROOT / ".ci" / "run"

QUICKSTART_MAIN = (
    "python3 -m venv .venv && . .venv/bin/activate && pip install -e . "
    "&& rbs run --out runs/default"
)
QUICKSTART_TESTS = (
    'python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[dev]" && python -m pytest'
)
TEST_COMMAND = ["python", "-m", "pytest"]
MAIN_JOB = ["run", "--out", "runs/default"]

#: README placeholder -> the concrete value a parse uses (``<command>``: every subcommand).
PLACEHOLDERS = {
    "DIR": "ckpt",
    "RESULTS": "results",
    "FILE": "model.rbsp",
    "FILE.toml": "train.toml",
    "CONFIG.toml": "experiment.toml",
    "NAME": "digits-smallcnn",
    "N": "30",
    "THIN": "thin",
    "PRUNED": "pruned",
}
#: What a trailing ``...`` ("and the rest of the command") stands for, per subcommand.
REST = {"train": ["--out", "DIR"], "attack": ["--checkpoint", "DIR", "--out", "RESULTS"]}
#: Shell commands of the README that are not ``rbs`` (first words).
OTHER_COMMANDS = [
    ["python3", "-m", "venv"],
    ["."],
    ["pip", "install"],
    TEST_COMMAND,
    ["cp"],
    ["mkdir", "-p"],
    ["tar", "xzf"],
]
#: Flags in the README that belong to torchrun, not to ``rbs``.
TORCHRUN_FLAGS = {
    "--standalone",
    "--nproc_per_node",
    "--nnodes",
    "--node_rank",
    "--rdzv_backend",
    "--rdzv_endpoint",
    "--rdzv_id",
}
FLAG_RE = re.compile(r"(?<![\w-])--[a-z][a-z0-9_-]*")
UNRESOLVED_RE = re.compile(r"^[A-Z][A-Z_.]*$|[<>\[\]]|\.\.\.")

# ----------------------------------------------------------------------------- README parsing


def readme() -> str:
    return README.read_text(encoding="utf-8")


def fenced_blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.S | re.M)


def split_commands(script: str) -> list[list[str]]:
    """Shell text -> commands (word lists): continuations joined, comments dropped, split on
    ``&&``, ``||``, ``;`` and ``|``."""
    commands: list[list[str]] = []
    words: list[str] = []
    for token in _tokens(script.replace("\\\n", " ")):
        if token in ("&&", "||", ";", "|", "\n"):
            if words:
                commands.append(words)
            words = []
        else:
            words.append(token)
    return commands


def _tokens(script: str) -> Iterator[str]:
    """Words and separators of each line (a newline ends a command); here-document bodies and
    leading ``NAME=value`` environment assignments are skipped."""
    heredoc_end: str | None = None
    for line in script.splitlines():
        if heredoc_end is not None:
            heredoc_end = None if line.strip() == heredoc_end else heredoc_end
            continue
        match = re.search(r"<<-?\s*['\"]?(\w+)['\"]?", line)
        if match:
            heredoc_end, line = match.group(1), line[: match.start()]
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        start = True
        for word in lexer:
            if start and re.fullmatch(r"[A-Za-z_]\w*=.*", word):
                continue  # an environment assignment before the command
            start = word in ("&&", "||", ";", "|")
            yield word
        yield "\n"


def rbs_argv(words: list[str]) -> list[str] | None:
    """The ``rbs`` argv of a shell command, or None when it is not an ``rbs`` command."""
    if words[0] == "rbs":
        return words[1:]
    for i in range(len(words) - 1):
        if words[i] == "-m" and words[i + 1] == "rbs":
            assert words[0] in ("torchrun", "python", "python3"), words
            return words[i + 2 :]
    return None


def bash_commands(text: str) -> list[list[str]]:
    return [cmd for block in fenced_blocks(text, "bash") for cmd in split_commands(block)]


def inline_rbs_spans(text: str) -> list[str]:
    """Backticked ``rbs ...`` in the README's prose and tables (outside fenced blocks)."""
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return [s for s in re.findall(r"`([^`\n]+)`", prose) if s == "rbs" or s.startswith("rbs ")]


def subcommand_names() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return list(action.choices)


def _resolve(word: str, i: int) -> str:
    """Alternative ``i`` of ``a|b|c`` (cycling), with placeholders replaced."""
    options = word.split("|")
    choice = options[i % len(options)]
    return PLACEHOLDERS.get(choice, choice)


def expand_span(span: str) -> list[list[str]]:
    """A documented command -> the concrete argvs it stands for.

    ``[...]`` optional parts: once without any, once with all; ``a\\|b`` alternatives: one argv per
    alternative; ``...`` inside a repeated group is dropped, a trailing one becomes :data:`REST`;
    placeholders come from :data:`PLACEHOLDERS`; ``rbs <command>``: every subcommand.
    """
    text = span.replace("\\|", "|")
    minimal = re.sub(r"\[[^\]]*\]", " ", text)
    fullest = text.replace("[", " ").replace("]", " ")
    argvs: list[list[str]] = []
    for variant in (minimal, fullest):
        for part in variant.split("&&"):
            words = shlex.split(part)
            if words[0] != "rbs":
                continue
            argv = words[1:]
            if argv and argv[-1] == "...":
                argv = argv[:-1] + REST[argv[0]]
            argv = [w for w in argv if w != "..."]
            commands = subcommand_names() if "<command>" in argv else ["<command>"]
            for command in commands:
                with_command = [command if w == "<command>" else w for w in argv]
                count = max((w.count("|") + 1 for w in with_command), default=1)
                argvs += [[_resolve(w, i) for w in with_command] for i in range(count)]
    unique: list[list[str]] = []
    for argv in argvs:
        if argv not in unique:
            unique.append(argv)
    return unique


def readme_argvs() -> list[tuple[str, list[str]]]:
    """(README text, argv) for every ``rbs`` command in the README."""
    text = readme()
    out = [
        (shlex.join(words), argv)
        for words in bash_commands(text)
        if (argv := rbs_argv(words)) is not None
    ]
    out += [(span, argv) for span in inline_rbs_spans(text) for argv in expand_span(span)]
    return out


def parse_or_fail(argv: list[str], where: str) -> argparse.Namespace | None:
    """Parse ``argv`` with the real parser; ``--help`` counts as accepted (None)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            return build_parser().parse_args(argv)
        except SystemExit as exc:
            if exc.code == 0 and "--help" in argv:
                return None
            pytest.fail(
                f"README command {where!r} (argv {argv}) is refused: {err.getvalue().strip().splitlines()[-1]}"
            )


def span(prefix: str) -> str:
    """The one inline README command starting with ``prefix``."""
    found = [s for s in inline_rbs_spans(readme()) if s.startswith(prefix)]
    assert len(found) == 1, (prefix, found)
    return found[0]


# ------------------------------------------------------------------------ every command parses


def test_every_readme_command_is_accepted_by_the_parser() -> None:
    argvs = readme_argvs()
    assert len(argvs) >= 30
    for where, argv in argvs:
        leftover = [w for w in argv if UNRESOLVED_RE.search(w)]
        assert not leftover, f"{where!r}: unknown placeholder {leftover}; add it to PLACEHOLDERS"
        parse_or_fail(argv, where)


def test_every_readme_shell_command_is_known() -> None:
    for words in bash_commands(readme()):
        if rbs_argv(words) is None:
            assert any(words[: len(known)] == known for known in OTHER_COMMANDS), words


PIP_FLAGS = {"--index-url"}  # the CPU-only torch install


def test_every_flag_the_readme_mentions_exists() -> None:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    known = {
        o for p in [parser, *action.choices.values()] for a in p._actions for o in a.option_strings
    }
    text = readme()
    for flag in sorted(set(FLAG_RE.findall(text))):
        assert flag in known or flag in TORCHRUN_FLAGS or flag in PIP_FLAGS, (
            f"README mentions {flag}, which no command has"
        )
    # The Campfire section documents `rbs train` flags.
    section = text[text.index("## Campfire, as implemented here") : text.index("## Command line")]
    train = {o for a in action.choices["train"]._actions for o in a.option_strings}
    assert set(FLAG_RE.findall(section)) <= train


def test_table_rows_flags_go_with_their_command() -> None:
    """Flags backticked in a command row's description (e.g. `--sparsity 0`) parse with it."""
    rows = 0
    for line in readme().splitlines():
        cells = line.strip().strip("|").split(" | ") if line.startswith("| `rbs ") else []
        if len(cells) != 2:
            continue
        flags = [f for f in re.findall(r"`([^`]+)`", cells[1]) if f.startswith("--")]
        for base in expand_span(re.findall(r"`([^`]+)`", cells[0])[0]) if flags else []:
            extra = [PLACEHOLDERS.get(w, w) for f in flags for w in shlex.split(f)]
            parse_or_fail([*base, *extra], f"{cells[0]} + {flags}")
            rows += 1
    assert rows >= 1


def test_placeholders_are_real() -> None:
    assert PLACEHOLDERS["NAME"] in recipe_names()
    for where, argv in readme_argvs():
        args = parse_or_fail(argv, where)
        config = getattr(args, "config_flag", None) or getattr(args, "config", None)
        if config and str(config) not in PLACEHOLDERS.values():
            assert (ROOT / str(config)).is_file(), f"{where!r}: {config} does not exist"
        recipe = getattr(args, "recipe", None)
        if recipe:
            assert recipe in recipe_names(), where


# ------------------------------------------------------------------------ quickstart and CI


def test_quickstart_commands_are_exactly_these() -> None:
    blocks = fenced_blocks(readme(), "bash")
    lines = [
        [ln for ln in block.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        for block in blocks[:2]
    ]
    assert lines == [[QUICKSTART_MAIN], [QUICKSTART_TESTS]]
    assert split_commands(QUICKSTART_MAIN)[-1] == ["rbs", *MAIN_JOB]
    assert split_commands(QUICKSTART_TESTS)[-1] == TEST_COMMAND


def ci_commands(script: str) -> list[list[str]]:
    return split_commands(script)


def check_ci_runs_the_readme(script: str) -> None:
    commands = ci_commands(script)
    assert TEST_COMMAND in commands, ".ci/run does not run the README's `python -m pytest`"
    runs = [c for c in commands if c[:2] == ["rbs", "run"]]
    assert len(runs) == 1, f".ci/run should run the README's main job once, found {runs}"
    argv = runs[0][1:]
    parse_or_fail(argv, ".ci/run")
    out = argv.index("--out")
    assert [*argv[:out], "--out", MAIN_JOB[2], *argv[out + 2 :]] == MAIN_JOB, (
        f".ci/run's `rbs {shlex.join(argv)}` is not the README's `rbs {shlex.join(MAIN_JOB)}`"
    )


def test_ci_checker_accepts_the_planned_line_and_refuses_others() -> None:
    base = "set -euo pipefail\necho '== tests'\npython -m pytest\n"
    check_ci_runs_the_readme(
        base + 'echo "== main job (README quickstart)"; rbs run --out "$(mktemp -d)/default"\n'
    )
    check_ci_runs_the_readme(
        'OUT="$(mktemp -d)/default"\nTQDM_DISABLE=1 rbs run --out "$OUT"\n'
        "python - <<'PY'\nimport sys  # it's python; rbs run --limit 1\nPY\n" + base
    )
    for bad in (base, base + "rbs run --limit 5 --out x\n", "rbs run --out x\n"):
        with pytest.raises(AssertionError):
            check_ci_runs_the_readme(bad)


def test_ci_runs_the_readme_test_command_and_main_job() -> None:
    check_ci_runs_the_readme(CI_RUN.read_text(encoding="utf-8"))


# ------------------------------------------------------------------------ the cheap ones run

#: Tiny settings appended to the README's commands so they run in seconds on a CPU.
TINY_TRAIN = ["--epochs", "2", "--train-limit", "200", "--test-limit", "50", "--device", "cpu"]
TINY_ATTACK = [
    "--param",
    "pgd.steps=3",
    "--param",
    "cw.steps=10",
    "--param",
    "cw.binary_search_steps=2",
    "--batch-size",
    "50",
]


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    # main() installs its own stderr handler on the root logger; put pytest's back afterwards.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {
        n: logging.getLogger(n).level
        for n in ("robustbench_sparse", "attacks", "evaluations", "rbs")
    }
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, lvl in levels.items():
        logging.getLogger(name).setLevel(lvl)


def run_rbs(argv: list[str], capsys: pytest.CaptureFixture[str], status: int = 0) -> str:
    code = main(argv)
    captured = capsys.readouterr()
    assert code == status, f"rbs {shlex.join(argv)} exited {code}: {captured.err}"
    return captured.out if status == 0 else captured.err


def concrete(span_text: str, **values: str) -> list[str]:
    """The fullest argv of a README command, with placeholders given here (default: PLACEHOLDERS)."""
    argv = max(expand_span(span_text), key=len)  # the first of the longest: all options
    mapping = {PLACEHOLDERS[k]: v for k, v in values.items()}
    return [mapping.get(w, w) for w in argv]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("readme")
    (path / "tiny.toml").write_text("[model]\nwidth = 0.25\n")
    return path


@pytest.fixture(scope="module")
def trained(workdir: Path) -> dict[str, Path]:
    """The README's `rbs train` row (window, 70 %) and its `--sparsity 0` dense baseline."""
    command = span("rbs train --dataset digits")
    out = {}
    for name, extra in (("window-70", []), ("dense", ["--sparsity", "0"])):
        ckpt = workdir / name
        argv = [
            *concrete(command, DIR=str(ckpt)),
            *TINY_TRAIN,
            "--config",
            str(workdir / "tiny.toml"),
        ]
        assert main(["-q", *argv, *extra]) == 0
        out[name] = ckpt
    return out


def test_rbs_models_recipes_and_default_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert "small_cnn" in run_rbs(["models"], capsys) and "digits" in run_rbs(["models"], capsys)
    out = run_rbs(["recipes"], capsys)
    assert all(name in out for name in recipe_names())
    assert PLACEHOLDERS["NAME"] in out
    shipped = (ROOT / "evaluations" / "configs" / "default.toml").read_text(encoding="utf-8")
    assert run_rbs(concrete(span("rbs run --print-default-config")), capsys) == shipped


@pytest.mark.parametrize("command", [*subcommand_names(), None])
def test_every_help_exits_0(command: str | None, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"] if command else ["--help"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: rbs {command or ''}".rstrip())


def test_train_then_inspect(trained: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    for argv in expand_span(span("rbs inspect DIR")):
        out = run_rbs(
            [str(trained["window-70"]) if w == PLACEHOLDERS["DIR"] else w for w in argv], capsys
        )
        if "--json" in argv:
            info = json.loads(out)
            assert (info["granularity"], info["sparsity_target"]) == ("window", 0.7)
            assert info["sparsity_report"]["achieved_pruned"] > 0.6
        else:
            assert "granularity window" in out and "clean test accuracy" in out


def test_export_verify(
    trained: dict[str, Path], workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    packed = workdir / "model.rbsp"
    argv = concrete(span("rbs export DIR"), DIR=str(trained["window-70"]), FILE=str(packed))
    out = run_rbs(argv, capsys)
    assert packed.is_file() and "bit-identical" in out


def test_attack_plot_report(
    trained: dict[str, Path], workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = workdir / "results"
    argv = concrete(span("rbs attack --checkpoint DIR"), RESULTS=str(results))
    assert argv.count(PLACEHOLDERS["DIR"]) == 2 and "native" in argv and "30" in argv
    first = argv.index(PLACEHOLDERS["DIR"])
    argv[first] = str(trained["window-70"])
    argv[argv.index(PLACEHOLDERS["DIR"])] = str(trained["dense"])
    out = run_rbs(["-q", *argv, *TINY_ATTACK], capsys)
    assert "results:" in out and (results / "results.csv").is_file()
    for command in ("rbs plot", "rbs report"):
        plot_or_report = concrete(span(command), RESULTS=str(results))
        assert run_rbs(["-q", *plot_or_report], capsys)
    assert (results / "report.html").is_file() and (results / "report.md").is_file()


def test_cifar10_commands_need_the_data(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The CIFAR-10 commands parse (above); without the data they stop with a pointer to --download."""
    missing = str(workdir / "no-such-data-root")
    cifar = [
        argv
        for _, argv in readme_argvs()
        if "cifar10" in argv and "--nproc" not in argv and "--device" not in argv
    ]
    train = next(a for a in cifar if a[0] == "train")
    attack = next(a for a in cifar if a[0] == "attack")
    train = [
        *train[: train.index("--out")],
        "--out",
        str(workdir / "r20-w70"),
        "--data-root",
        missing,
    ]
    err = run_rbs(train, capsys, status=2)
    assert "--download" in err and "cifar10" in err and "\n" not in err.rstrip("\n")
    # the plain state dict the README attacks (a torchvision ResNet-18 for 10 classes)
    from robustbench_sparse.datasets import dataset_info
    from robustbench_sparse.models import create_model

    info = dataset_info("cifar10")
    weights = workdir / attack[attack.index("--checkpoint") + 1]
    torch.save(
        create_model("resnet18", num_classes=10, mean=info.mean, std=info.std).net.state_dict(),
        weights,
    )
    attack = [str(weights) if w == weights.name else w for w in attack]
    attack[attack.index("--data-root") + 1] = missing
    attack[attack.index("--out") + 1] = str(workdir / "resnet18-results")
    err = run_rbs(attack, capsys, status=2)
    assert "--download" in err and "cifar10" in err


def test_python_snippet(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's Python example, on a fresh resnet20's weights and 16 synthetic images."""
    (snippet,) = [b for b in fenced_blocks(readme(), "python") if '"cifar10"' in b]
    data_lines = [
        'test = load_split("cifar10", "test", root="data", limit=500)\n',
        "x = torch.stack([test[i][0] for i in range(len(test))])  # (N, 3, 32, 32) in [0, 1]\n",
        "y = torch.tensor([int(test[i][1]) for i in range(len(test))])\n",
    ]
    for line in data_lines:
        assert snippet.count(line) == 1, f"the README's Python snippet changed: {line!r}"
    snippet = snippet.replace(data_lines[0], "").replace(data_lines[2], "")
    snippet = snippet.replace(
        data_lines[1], "x = torch.rand(16, 3, 32, 32); y = torch.randint(0, 10, (16,))\n"
    )
    from robustbench_sparse.datasets import dataset_info
    from robustbench_sparse.models import create_model

    info = dataset_info("cifar10")
    weights = workdir / "my_resnet20.pt"
    torch.manual_seed(0)
    torch.save(
        create_model("resnet20", num_classes=10, mean=info.mean, std=info.std).state_dict(), weights
    )
    assert snippet.count('"my_resnet20.pt"') == 1
    snippet = snippet.replace('"my_resnet20.pt"', repr(str(weights)))
    namespace: dict[str, object] = {}
    torch.manual_seed(1)
    exec(compile(snippet, "README.md", "exec"), namespace)
    printed = json.loads(capsys.readouterr().out.strip())
    assert len(printed) == 4 and all(isinstance(v, float) for v in printed)
    model, x, y = namespace["model"], namespace["x"], namespace["y"]
    assert (
        isinstance(model, torch.nn.Module)
        and isinstance(x, torch.Tensor)
        and isinstance(y, torch.Tensor)
    )
    model.eval()
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item()
    assert math.isclose(printed[0], clean, abs_tol=1e-6)


def test_python_snippet_digits_offline(
    trained: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's offline digits example, on the window-70 checkpoint the README's train made."""
    (snippet,) = [b for b in fenced_blocks(readme(), "python") if '"digits"' in b]
    path = '"runs/default/checkpoints/channel-70"'
    assert snippet.count(path) == 1, "the README's digits snippet changed"
    snippet = snippet.replace(path, repr(str(trained["window-70"])))
    namespace: dict[str, object] = {}
    with single_thread():
        torch.manual_seed(0)
        exec(compile(snippet, "README.md", "exec"), namespace)
    printed = json.loads(capsys.readouterr().out.strip())
    assert len(printed) == 4 and all(0.0 <= v <= 1.0 for v in printed)
    assert printed == sorted(printed, reverse=True)  # nested balls: never more robust at larger eps
    ckpt, x, y = namespace["ckpt"], namespace["x"], namespace["y"]
    assert isinstance(x, torch.Tensor) and x.shape[1:] == (1, 8, 8) and len(x) == 200
    with torch.no_grad():
        clean = (ckpt.model(x).argmax(1) == y).float().mean().item()  # type: ignore[attr-defined]
    assert math.isclose(printed[0], clean, abs_tol=1e-6)
