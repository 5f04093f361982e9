"""Adversarial attacks behind one protocol: ``attack(model, x, y, *, epsilons) -> AttackResult``.

Depends on torch (and torchattacks / foolbox in ``attacks.backends``) only. Inputs are images in
``[0, 1]``; normalization belongs inside the model.

>>> attack = get_attack("pgd", backend="native", steps=20)
>>> result = attack(model, x, y, epsilons=[0.0, 0.1, 0.2])   # doctest: +SKIP
>>> result.success.shape                                     # (K, N)  # doctest: +SKIP
"""

from __future__ import annotations

from attacks.base import (
    Attack,
    AttackConfigError,
    AttackInputError,
    AttackKind,
    AttackResult,
    FixedBudgetOutput,
    MinimumNormOutput,
)
from attacks.guard import frozen_eval
from attacks.norms import Norm, clip_to_ball, perturbation_norm, verify_adversarials
from attacks.registry import Backend, get_attack, list_attacks, list_backends

__all__ = [
    "Attack",
    "AttackConfigError",
    "AttackInputError",
    "AttackKind",
    "AttackResult",
    "Backend",
    "FixedBudgetOutput",
    "MinimumNormOutput",
    "Norm",
    "clip_to_ball",
    "frozen_eval",
    "get_attack",
    "list_attacks",
    "list_backends",
    "perturbation_norm",
    "verify_adversarials",
]
