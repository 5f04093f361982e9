"""errors: UserError and unknown_name (lists the valid names, suggests the nearest)."""

from __future__ import annotations

from robustbench_sparse.errors import UserError, unknown_name


def test_user_error_is_an_exception_with_its_message() -> None:
    err = UserError("bad flag")
    assert isinstance(err, Exception)
    assert str(err) == "bad flag"


def test_unknown_name_lists_sorted_valid_names_and_suggests_nearest() -> None:
    err = unknown_name("model", "resnt20", ["small_cnn", "resnet20", "resnet56"])
    assert isinstance(err, UserError)
    msg = str(err)
    assert "unknown model 'resnt20'" in msg
    assert "valid: resnet20, resnet56, small_cnn." in msg
    assert "Did you mean 'resnet20'?" in msg
    assert "\n" not in msg


def test_unknown_name_without_close_match_has_no_suggestion() -> None:
    msg = str(unknown_name("dataset", "zzzzzz", ["digits", "mnist"]))
    assert "digits, mnist" in msg
    assert "Did you mean" not in msg


def test_unknown_name_accepts_any_iterable() -> None:
    msg = str(unknown_name("attack", "pgdd", (n for n in ["fgsm", "pgd"])))
    assert "valid: fgsm, pgd." in msg
    assert "Did you mean 'pgd'?" in msg


def test_unknown_name_suggests_across_case() -> None:
    # `--dataset MNIST` -> "did you mean 'mnist'" (difflib alone is case-sensitive)
    assert "Did you mean 'mnist'?" in str(unknown_name("dataset", "MNIST", ["digits", "mnist"]))
    assert "Did you mean 'fashion-mnist'?" in str(
        unknown_name("dataset", "Fashion_MNIST", ["fashion-mnist", "digits"])
    )
