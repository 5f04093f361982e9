"""attacks.contracts (through the Attack template): every attack of every backend refuses the same
bad inputs before any work, accepts any float dtype, handles N = 0 and non-finite gradients.

Each kind of fault of issue 14 is tried with several inputs, on every registered attack where
the check lives in the template (it cannot depend on the backend).
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from attacks import AttackInputError, AttackKind, Norm, get_attack, list_attacks
from attacks.contracts import epsilon_unit_warnings, model_dtype, validate_inputs
from attacks.gradients import finite_gradient, finite_input_gradient, loss_gradient
from attacks.norms import verification_tolerance, verify_adversarials
from attacks.wrappers import CastInputs, select_output
from tests.attack_helpers import Digits, digits, installed_backends

ALL = [(b, n) for b in installed_backends() for n in list_attacks(b)]
# Small budgets: these tests check contracts, not strength.
FAST: dict[str, dict[str, Any]] = {
    "pgd": {"steps": 3},
    "pgd-l2": {"steps": 3},
    "cw": {"binary_search_steps": 2, "steps": 10},
    "cw-fixed-c": {"steps": 30},
}
CORE = [(b, n) for b, n in ALL if n in FAST or n == "fgsm"]


def _attack(backend: str, name: str) -> Any:
    return get_attack(name, backend=backend, **FAST.get(name, {}))


def _eps(attack: Any) -> list[float]:
    return [0.0, 0.1, 0.3] if attack.norm is Norm.LINF else [0.0, 1.0, 2.0]


@pytest.fixture(scope="module")
def data() -> Digits:
    return digits()


class Counting(nn.Module):
    """Counts forward calls; returns ``out_fn(model(x))`` (a deliberately wrong output)."""

    def __init__(self, model: nn.Module, out_fn: Any = None) -> None:
        super().__init__()
        self.model = model
        self.out_fn = out_fn or (lambda z: z)
        self.calls = 0
        self.training = model.training

    def forward(self, x: Tensor) -> Any:
        self.calls += 1
        return self.out_fn(self.model(x))


# -- 1. what a model returns -----------------------------------------------------------------

BAD_OUTPUTS: dict[str, tuple[Any, str]] = {
    "tuple": (lambda z: (z, z.mean(1)), "wrap it with attacks.wrappers.select_output(model, 0)"),
    "list": (lambda z: [z], "got a list of 1 elements"),
    "dict": (lambda z: {"logits": z, "f": z}, "select_output(model, 'logits')"),
    "(N, 1, 10)": (lambda z: z.unsqueeze(1), "shape (4, 1, 10) for 4 inputs"),
    "(N,)": (lambda z: z[:, 0], "shape (4,) for 4 inputs"),
    "(N, C, H, W)": (lambda z: z[:, :, None, None].expand(-1, -1, 2, 2), "(4, 10, 2, 2)"),
    "int64": (lambda z: z.argmax(1, keepdim=True).expand(-1, 10), "torch.int64 tensor"),
    "wrong batch": (lambda z: z[:1], "one row per input (got a torch.float32 tensor of shape"),
    "one logit": (lambda z: z[:, :1], "num_classes >= 2"),
    "numpy": (lambda z: z.detach().numpy(), "got a ndarray"),
}


@pytest.mark.parametrize("kind", sorted(BAD_OUTPUTS))
@pytest.mark.parametrize(("backend", "name"), ALL)
def test_bad_model_outputs_refused_before_any_work(
    data: Digits, backend: str, name: str, kind: str
) -> None:
    out_fn, expected = BAD_OUTPUTS[kind]
    model = Counting(data.model, out_fn)
    with pytest.raises(AttackInputError) as err:
        _attack(backend, name)(model, data.x[:4], data.y[:4], epsilons=[0.0, 0.1])
    message = str(err.value)
    assert "the model must return a floating-point tensor of shape (N, num_classes)" in message
    assert expected in message, message
    assert model.calls == 1  # only the clean contract check ran; no attack step


@pytest.mark.parametrize(("backend", "name"), CORE)
@pytest.mark.parametrize("key", [0, -2, "logits", "attr"])
def test_select_output_gives_the_plain_models_result(
    data: Digits, backend: str, name: str, key: int | str
) -> None:
    class Out:
        def __init__(self, logits: Tensor) -> None:
            self.attr = logits

    shapes = {
        0: lambda z: (z, z.sum()),
        -2: lambda z: [z, z.sum()],
        "logits": lambda z: {"features": z.sum(), "logits": z},
        "attr": Out,
    }
    model = select_output(Counting(data.model, shapes[key]), key)
    x, y = data.x[:24], data.y[:24]
    attack = _attack(backend, name)
    eps = _eps(attack)
    torch.manual_seed(0)
    wrapped = attack(model, x, y, epsilons=eps)
    torch.manual_seed(0)
    plain = attack(data.model, x, y, epsilons=eps)
    assert torch.equal(wrapped.success, plain.success)
    assert torch.allclose(wrapped.adversarials, plain.adversarials, atol=1e-6)


@pytest.mark.parametrize(
    ("out", "key", "match"),
    [
        ((1, 2), 5, "index 5 is out of range for the model's tuple of 2 outputs"),
        ({"a": 1}, "logits", "has no key 'logits' \\(keys: \\['a'\\]\\)"),
        (torch.zeros(2, 3), 0, "needs a tuple or list output, but the model returns a Tensor"),
        (torch.zeros(2, 3), "logits", "returns a Tensor, which has no key or attribute 'logits'"),
    ],
)
def test_select_output_errors_name_what_the_model_returned(out: Any, key: Any, match: str) -> None:
    class Fixed(nn.Module):
        def forward(self, x: Tensor) -> Any:
            return out

    with pytest.raises(AttackInputError, match=match):
        select_output(Fixed(), key)(torch.zeros(2, 3))


@pytest.mark.parametrize("key", [1.0, None, True, (0,)])
def test_select_output_key_must_be_int_or_str(key: Any) -> None:
    with pytest.raises(AttackInputError, match="must be an int index or a str key"):
        select_output(nn.Identity(), key)


# -- 2. what labels are ----------------------------------------------------------------------

BAD_LABELS: dict[str, tuple[Any, str]] = {
    "1-based": (
        lambda y: y + 1,
        r"labels must be class indices in \[0, 10\) for this 10-class model \(got values in "
        r"\[\d+, 10\]\); they look 1-based: pass y - 1",
    ),
    "negative": (lambda y: y - 3, r"in \[0, 10\) .*got values in \[-\d+, \d+\]"),
    "too large": (lambda y: y * 100, r"got values in \[\d+, \d+\]"),
    "one-hot": (
        lambda y: torch.nn.functional.one_hot(y, 10),
        r"not one-hot or probabilities \(got shape \(6, 10\), dtype torch.int64\); pass "
        r"y.argmax\(dim=1\)",
    ),
    "probabilities": (
        lambda y: torch.nn.functional.one_hot(y, 10).float(),
        r"not one-hot or probabilities \(got shape \(6, 10\), dtype torch.float32\)",
    ),
    "float": (
        lambda y: y.float(),
        r"integer class indices \(got dtype torch.float32, values in \[\d, \d\]\); convert them "
        r"with y.long\(\)",
    ),
    "fractional": (lambda y: y.float() + 0.5, r"got dtype torch.float32, values in \[[\d.]+, "),
    "bool": (lambda y: y > 4, r"integer class indices \(got dtype torch.bool"),
    "wrong length": (lambda y: y[:3], r"labels must be a tensor of shape \(6,\) \(got \(3,\)\)"),
    "list": (lambda y: y.tolist(), r"labels must be a tensor of 6 integer class indices"),
}


@pytest.mark.parametrize("kind", sorted(BAD_LABELS))
@pytest.mark.parametrize(("backend", "name"), ALL)
def test_bad_labels_refused_saying_what_was_found(
    data: Digits, backend: str, name: str, kind: str
) -> None:
    make, pattern = BAD_LABELS[kind]
    model = Counting(data.model)
    with pytest.raises(AttackInputError, match=pattern):
        _attack(backend, name)(model, data.x[:6], make(data.y[:6]), epsilons=[0.0, 0.1])
    assert model.calls <= 1  # shape/dtype: before the model; range: after the clean check only


def test_labels_of_every_integer_dtype_accepted(data: Digits) -> None:
    for dtype in (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64):
        result = get_attack("fgsm")(data.model, data.x[:8], data.y[:8].to(dtype), epsilons=[0.1])
        assert result.success.shape == (1, 8)


# -- 3. input dtypes -------------------------------------------------------------------------

DTYPES = [
    (torch.float32, torch.float64),  # float64 inputs, float32 model
    (torch.float64, torch.float32),  # float64 model
    (torch.float16, torch.float32),  # half model: attacked in float32 (CastInputs)
    (torch.bfloat16, torch.float64),
    (torch.float32, torch.float16),  # half inputs
    (torch.float32, torch.bfloat16),
]


@pytest.mark.parametrize(("model_dt", "x_dt"), DTYPES, ids=str)
@pytest.mark.parametrize(("backend", "name"), CORE)
def test_any_float_dtype_attacked_and_every_success_verified(
    data: Digits, backend: str, name: str, model_dt: torch.dtype, x_dt: torch.dtype
) -> None:
    model = copy.deepcopy(data.model).to(model_dt)
    x, y = data.x[:24].to(x_dt), data.y[:24]
    attack = _attack(backend, name)
    eps = _eps(attack)
    result = attack(model, x, y, epsilons=eps)
    work = torch.float64 if model_dt is torch.float64 else torch.float32
    assert result.adversarials.dtype == work
    xw = x.to(work)
    assert result.verify_failed is not None and not bool(result.verify_failed.any())
    view = model if model_dt in (torch.float32, torch.float64) else CastInputs(model, model_dt)
    clean = (view(xw).argmax(1) == y).float().mean().item()
    assert result.robust_accuracy()[0] == pytest.approx(clean)  # eps = 0 is clean accuracy
    for k, e in enumerate(eps):
        ok = result.success[k]
        assert bool(verify_adversarials(result.adversarials[k], xw, e, attack.norm)[ok].all())
        assert bool((view(result.adversarials[k]).argmax(1) != y)[ok].all())
        assert torch.equal(result.adversarials[k][~ok], xw[~ok])  # unbroken: x itself
    if attack.kind is AttackKind.FIXED_BUDGET:
        assert result.robust_accuracy()[-1] < clean  # it really attacked in that dtype


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("norm", list(Norm))
def test_rounding_of_a_projection_in_the_dtype_is_within_tolerance(
    dtype: torch.dtype, norm: Norm
) -> None:
    from attacks.norms import clip_to_ball

    torch.manual_seed(0)
    x = torch.rand(64, 3, 8, 8).to(dtype)
    eps = 8 / 255 if norm is Norm.LINF else 0.5
    adv = clip_to_ball(x + torch.randn_like(x), x, eps, norm)  # on the ball's boundary
    assert bool(verify_adversarials(adv, x, eps, norm).all())
    atol, rtol = verification_tolerance(dtype, norm, 192)
    assert atol >= 1e-6 and rtol >= 1e-6
    if dtype in (torch.float32, torch.float64) and norm is Norm.LINF:
        assert (atol, rtol) == (1e-6, 1e-6)  # the float32 slack is unchanged
    # The tolerance is still tight: a real step outside the ball is caught.
    outside = (x.double() + (eps + 10 * atol) * (torch.rand_like(x.double()) > 0.5)).clamp(0, 1)
    assert not bool(verify_adversarials(outside.to(dtype), x, eps, Norm.LINF).all())


def test_model_dtype_rule() -> None:
    assert model_dtype(nn.Linear(2, 2).double(), torch.float32) is torch.float64
    assert model_dtype(nn.Identity(), torch.float16) is torch.float16  # no params: the inputs'
    bn = nn.BatchNorm1d(2, affine=False).to(torch.bfloat16)
    assert model_dtype(bn, torch.float32) is torch.bfloat16  # buffers count too


@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8, torch.bool])
def test_non_float_inputs_refused_naming_the_dtype(dtype: torch.dtype) -> None:
    x = torch.zeros(2, 1, 8, 8, dtype=dtype)
    with pytest.raises(AttackInputError, match=f"floating-point .*got dtype {dtype}"):
        validate_inputs(x, torch.tensor([0, 1]))


# -- 4. empty input --------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(0, 1, 8, 8), (0, 3, 4, 4), (0, 5)])
@pytest.mark.parametrize(("backend", "name"), ALL)
def test_empty_batch_gives_empty_result_without_calling_the_model(
    data: Digits, backend: str, name: str, shape: tuple[int, ...]
) -> None:
    model = Counting(data.model)
    attack = _attack(backend, name)
    eps = _eps(attack)
    result = attack(model, torch.zeros(shape), torch.zeros(0, dtype=torch.long), epsilons=eps)
    k = len(eps)
    assert model.calls == 0
    assert result.adversarials.shape == (k, *shape)
    assert result.success.shape == result.norms.shape == (k, 0)
    assert result.predictions is not None and result.predictions.shape == (k, 0)
    assert result.verify_failed is not None and result.verify_failed.shape == (k, 0)
    assert result.grad_evals == 0
    assert all(math.isnan(a) for a in result.robust_accuracy())
    if attack.kind is AttackKind.MINIMUM_NORM:
        assert result.min_norm is not None and result.min_norm.shape == (0,)


def test_empty_batch_still_validates_labels_and_epsilons(data: Digits) -> None:
    x = torch.zeros(0, 1, 8, 8)
    with pytest.raises(AttackInputError, match="labels must be a tensor of shape \\(0,\\)"):
        get_attack("fgsm")(data.model, x, torch.zeros(1, dtype=torch.long), epsilons=[0.1])
    with pytest.raises(AttackInputError, match="sorted ascending"):
        get_attack("fgsm")(data.model, x, torch.zeros(0, dtype=torch.long), epsilons=[0.2, 0.1])


def test_inputs_without_features_refused() -> None:
    with pytest.raises(AttackInputError, match="inputs have no features"):
        validate_inputs(torch.zeros(3, 0), torch.zeros(3, dtype=torch.long))


# -- 5. non-finite gradients and outputs -----------------------------------------------------


class Sqrt(nn.Module):
    """``sqrt`` of the input: infinite input gradient wherever a pixel is exactly 0."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.sqrt(x)


@pytest.mark.parametrize(
    ("backend", "name", "eps"),
    [
        ("native", "pgd-l2", 2.0),
        ("torchattacks", "pgd-l2", 2.0),
        ("foolbox", "pgd-l2", 2.0),
        ("native", "pgd", 0.3),
        ("torchattacks", "pgd", 0.3),
        ("foolbox", "pgd", 0.3),
        ("native", "fgsm", 0.3),
        ("native", "cw", 2.0),
        ("foolbox", "cw", 2.0),
    ],
)
def test_sqrt_model_nan_gradients_never_poison_iterates(
    data: Digits, backend: str, name: str, eps: float
) -> None:
    # The repro: L2 PGD at eps 2 was reported 0.90 robust (NaN iterates failed
    # verification) while C&W said 0.02.
    model = nn.Sequential(Sqrt(), data.model)
    x, y = data.x[:60], data.y[:60]
    xg = x.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(model(xg), y, reduction="sum").backward()
    assert xg.grad is not None and not bool(torch.isfinite(xg.grad).all())  # the fault is real
    params = {"steps": 10} if name.startswith("pgd") else {}
    result = get_attack(name, backend=backend, **params)(model, x, y, epsilons=[0.0, eps])
    assert result.verify_failed is not None and not bool(result.verify_failed.any())
    assert result.robust_accuracy()[1] <= 0.5, result.robust_accuracy()  # was 0.90 with NaNs


def test_finite_gradient_keeps_signs_and_drops_nan_per_example() -> None:
    nan, inf = float("nan"), float("inf")
    g = torch.tensor([[1.0, nan, -2.0, inf], [inf, -inf, 0.5, 0.0], [nan, inf, -inf, 0.0]])
    expected = torch.tensor([[1.0, 0.0, -2.0, 2.0], [0.5, -0.5, 0.5, 0.0], [0.0, 1.0, -1.0, 0.0]])
    assert torch.equal(finite_gradient(g), expected)  # ±inf -> ± the row's largest finite |g|
    assert torch.equal(finite_gradient(g[:1]), expected[:1])  # rows are independent
    assert torch.equal(finite_gradient(expected), expected)  # finite gradients are unchanged
    torch.manual_seed(0)
    raw = torch.randn(5, 3, 4, 4)
    raw[raw > 1.5], raw[raw < -1.5], raw[raw.abs() < 0.05] = inf, -inf, nan
    # An L∞ step is exactly sign(raw) with NaN -> 0.
    assert torch.equal(finite_gradient(raw).sign(), torch.nan_to_num(raw.sign(), nan=0.0))
    x = torch.tensor([[0.0, 0.25, 1.0]], requires_grad=True)
    torch.sqrt(finite_input_gradient(x)).sum().backward()
    assert x.grad is not None and torch.equal(x.grad, torch.tensor([[1.0, 1.0, 0.5]]))


def test_fgsm_on_the_sqrt_model_steps_along_the_sign_of_the_raw_gradient(data: Digits) -> None:
    model = nn.Sequential(Sqrt(), data.model)
    x, y = data.x[:50], data.y[:50]
    xg = x.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(model(xg), y, reduction="sum").backward()
    assert xg.grad is not None and bool(torch.isinf(xg.grad).any())
    direction = torch.nan_to_num(xg.grad.sign(), nan=0.0)  # infinite entries keep their sign
    result = get_attack("fgsm")(model, x, y, epsilons=[0.1])
    expected = (x + 0.1 * direction).clamp(0, 1)
    broken = result.success[0] & (model(x).argmax(1) == y)
    assert bool(broken.any())
    assert torch.allclose(result.adversarials[0][broken], expected[broken], atol=1e-6)


def test_loss_gradient_is_finite_per_example(data: Digits) -> None:
    model = nn.Sequential(Sqrt(), data.model)
    x = data.x[:8].clone()
    x[1:] = x[1:].clamp_min(0.01)  # only example 0 has zero pixels
    grad = loss_gradient(model, x, data.y[:8])
    assert bool(torch.isfinite(grad).all())
    ref = loss_gradient(data.model, torch.sqrt(x[1:]), data.y[1:8])  # chain rule, finite part
    assert torch.allclose(grad[1:], ref / (2 * torch.sqrt(x[1:])), atol=1e-5)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize(("backend", "name"), ALL)
def test_non_finite_clean_logits_refused(data: Digits, backend: str, name: str, bad: float) -> None:
    def poison(z: Tensor) -> Tensor:
        z = z.clone()
        z[1, 3] = bad
        return z

    model = Counting(data.model, poison)
    with pytest.raises(AttackInputError, match="non-finite logits \\(NaN/inf\\) on 1 of 5 clean"):
        _attack(backend, name)(model, data.x[:5], data.y[:5], epsilons=[0.0, 0.1])
    assert model.calls == 1


def test_nan_logits_at_an_adversarial_count_as_broken(data: Digits) -> None:
    class NanAway(nn.Module):
        """Finite on the clean inputs, NaN once any pixel moved by more than 0.05."""

        def __init__(self, x0: Tensor) -> None:
            super().__init__()
            self.x0 = x0

        def forward(self, x: Tensor) -> Tensor:
            z = data.model(x)
            moved = (x - self.x0[: len(x)]).flatten(1).abs().amax(1) > 0.05
            return torch.where(moved[:, None], torch.full_like(z, float("nan")), z)

    x, y = data.x[:10], data.y[:10]
    model = NanAway(x)
    result = get_attack("fgsm")(model, x, y, epsilons=[0.0, 0.01, 0.2])
    correct = model(x).argmax(1) == y
    assert torch.equal(result.success[2], torch.ones(10, dtype=torch.bool))
    assert torch.equal(result.success[0], ~correct)


# -- 6. epsilon units ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("norm", "eps", "dim", "warned"),
    [
        (Norm.LINF, [0.0, 8.0], 64, [8.0]),
        (Norm.LINF, [1.0, 16.0], 3072, [1.0, 16.0]),
        (Norm.LINF, [0.0, 8 / 255, 0.999], 64, []),
        (Norm.L2, [0.5, 8.5], 64, [8.5]),  # diameter sqrt(64) = 8
        (Norm.L2, [8.0], 64, []),
        (Norm.L2, [55.0, 56.0], 3072, [56.0]),  # sqrt(3072) = 55.43
    ],
)
def test_epsilon_unit_warnings(norm: Norm, eps: list[float], dim: int, warned: list[float]) -> None:
    messages = epsilon_unit_warnings(eps, norm, dim)
    assert len(messages) == len(warned)
    for message, e in zip(messages, warned, strict=True):
        assert f"did you mean {e:g}/255" in message


@pytest.mark.parametrize(("backend", "name"), CORE)
def test_epsilon_unit_warning_logged_and_recorded(
    data: Digits, backend: str, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    attack = _attack(backend, name)
    big = 8.0 if attack.norm is Norm.LINF else 9.0  # L2: sqrt(64) = 8
    x, y = data.x[:4], data.y[:4]
    with caplog.at_level(logging.WARNING, logger="attacks"):
        result = attack(data.model, x, y, epsilons=[0.0, big])
    assert len(result.warnings) == 1 and f"did you mean {big:g}/255" in result.warnings[0]
    assert any("did you mean" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="attacks"):
        quiet = attack(data.model, x, y, epsilons=[0.0, big], warn_units=False)
    assert quiet.warnings == result.warnings  # still recorded
    assert not any("did you mean" in r.getMessage() for r in caplog.records)
    assert attack(data.model, x, y, epsilons=[0.0, 0.5]).warnings == []


# -- 9. what an unbroken example's adversarial is ----------------------------------------------


@pytest.mark.parametrize(("backend", "name"), CORE)
def test_unbroken_adversarials_are_x_and_broken_ones_verified(
    data: Digits, backend: str, name: str
) -> None:
    x, y = data.x[:40], data.y[:40]
    attack = _attack(backend, name)
    eps = [0.0, 0.03, 0.3] if attack.norm is Norm.LINF else [0.0, 0.3, 3.0]
    result = attack(data.model, x, y, epsilons=eps)
    assert result.predictions is not None
    for k, e in enumerate(eps):
        ok = result.success[k]
        assert torch.equal(result.adversarials[k][~ok], x[~ok])
        assert bool((result.norms[k][~ok] == 0).all())
        assert torch.equal(result.predictions[k][~ok], y[~ok])
        assert bool(verify_adversarials(result.adversarials[k], x, e, attack.norm).all())
    assert bool((~result.success[1]).any()) and bool(result.success[2].any())  # both cases seen


@pytest.mark.parametrize("training", [True, False])
def test_wrappers_leave_the_wrapped_models_mode_alone(training: bool) -> None:
    inner = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 2))
    inner.train(training)
    inner[1].train(not training)  # a mixed state must survive wrapping
    for wrapper in (select_output(inner, 0), CastInputs(inner, torch.float16)):
        assert wrapper.training == training
        assert [m.training for m in inner] == [training, not training, training]


def _l2_attacks() -> list[tuple[str, str]]:
    from attacks.registry import attack_class

    return [(b, n) for b, n in ALL if attack_class(n, backend=b).norm is Norm.L2]


@pytest.mark.parametrize(("backend", "name"), _l2_attacks())
def test_every_l2_attack_on_the_sqrt_model_has_no_failed_verification(
    data: Digits, backend: str, name: str
) -> None:
    from dataclasses import fields

    from attacks.registry import attack_class

    names = {f.name for f in fields(attack_class(name, backend=backend))}  # type: ignore[arg-type]
    params = {k: v for k, v in {"steps": 10, "n_queries": 200}.items() if k in names}
    model = nn.Sequential(Sqrt(), data.model)
    x, y = data.x[:30], data.y[:30]
    result = get_attack(name, backend=backend, **params)(model, x, y, epsilons=[0.0, 2.0])
    assert result.verify_failed is not None and not bool(result.verify_failed.any())
    assert result.robust_accuracy()[0] > 0.9
