"""Evaluation protocols: named, versioned sets of attacks with their parameters (data, not code).

A protocol says exactly which attacks produce a number, so every results sidecar can record it and
what it is known to be equivalent to. Three protocols ship:

``quick`` (v1)
    FGSM + PGD (20 steps, 1 restart) + C&W L2 (minimum norm): the product's historical default,
    fast enough for ``rbs run``'s time budget. It is *weaker* than AutoAttack (issue 11 measured PGD-20
    leaving 2.6x AutoAttack's robust accuracy at Linf 0.15 on digits); use it for development.
``standard`` (v1)
    ``quick`` + ``autoattack`` (APGD-CE -> APGD-T -> FAB-T -> Square on the survivors; Croce & Hein,
    ICML 2020, "standard" version) for Linf, and for L2 where an L2 grid is given, + ``autoattack-l1``
    (l1-APGD-CE with 5 restarts -> l1-APGD-T with 5 targets; Croce & Hein, ICML 2021) where an L1
    grid is given, + FMN (Pintor et al., NeurIPS 2021) for Linf minimum norms. This is the set the
    adversarial-pruning benchmark (Piras et al. 2024) re-evaluates every method with (L1 apart);
    the number to publish.
``thorough`` (v1)
    ``standard`` + ``autoattack-plus`` (AutoAttack's "plus" version: more restarts, untargeted FAB and
    Square restarts) + PGD with 100 steps and 5 restarts. Run it to show ``standard`` has converged:
    the masking check ``not_converged`` compares the two (see :mod:`evaluations.engine.masking`).

Every protocol also carries the settings of its gradient-masking probes (how many examples, which
black-box attack and how many queries); probes write flags, never numbers.

Paper defaults: :data:`PAPER_DEFAULTS` lists, per attack name, the parameters as the original paper
(or its reference code) sets them; :func:`paper_deviations` lists every parameter a run uses that
differs from them, for the report.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from attacks import get_attack
from robustbench_sparse.errors import UserError

__all__ = [
    "CUSTOM",
    "PAPER_DEFAULTS",
    "PROTOCOLS",
    "MaskingProbes",
    "Protocol",
    "ProtocolAttack",
    "describe",
    "get_protocol",
    "identify",
    "paper_deviations",
    "protocol_names",
    "resolve_attacks",
]

logger = logging.getLogger(__name__)

#: Name recorded when attacks were chosen by hand (``--attack``) instead of a protocol.
CUSTOM = "custom"


@dataclass(frozen=True)
class ProtocolAttack:
    """One attack of a protocol: registry name, parameters, and when it runs.

    ``only_with_l2_grid``: run only when the user gave an explicit L2 epsilon grid (AutoAttack L2
    is expensive and the default L2 grid exists for C&W's minimum norms); ``only_with_l1_grid``
    the same for an explicit L1 grid (``--eps-l1``: AutoAttack L1).
    """

    name: str
    params: tuple[tuple[str, Any], ...] = ()
    only_with_l2_grid: bool = False
    only_with_l1_grid: bool = False

    def runs(self, *, l2_grid_given: bool, l1_grid_given: bool = False) -> bool:
        """Whether this attack runs, given which explicit grids the user gave."""
        return (l2_grid_given or not self.only_with_l2_grid) and (
            l1_grid_given or not self.only_with_l1_grid
        )


@dataclass(frozen=True)
class MaskingProbes:
    """Settings of the gradient-masking probes (see :mod:`evaluations.engine.masking`).

    ``examples``: how many of the first test examples the probes use (at most).
    ``black_box``/``black_box_params``: the gradient-free attack run on the white-box survivors.
    """

    examples: int = 200
    black_box: str = "square"
    black_box_params: tuple[tuple[str, Any], ...] = (("n_queries", 1000),)


@dataclass(frozen=True)
class Protocol:
    """A named, versioned list of attack specs plus what it is known to be equivalent to."""

    name: str
    version: int
    summary: str
    equivalent_to: str
    attacks: tuple[ProtocolAttack, ...]
    probes: MaskingProbes = field(default_factory=MaskingProbes)

    @property
    def label(self) -> str:
        """``name/vN``: what the report prints next to every number."""
        return f"{self.name}/v{self.version}"

    def attack_names(self, *, l2_grid_given: bool, l1_grid_given: bool = False) -> list[str]:
        """The registry names this protocol runs (L2/L1-grid-only attacks dropped unless given)."""
        given = {"l2_grid_given": l2_grid_given, "l1_grid_given": l1_grid_given}
        return [a.name for a in self.attacks if a.runs(**given)]

    def params(
        self, *, l2_grid_given: bool, l1_grid_given: bool = False
    ) -> dict[str, dict[str, Any]]:
        """Per-attack parameter overrides (attacks without overrides are absent)."""
        given = {"l2_grid_given": l2_grid_given, "l1_grid_given": l1_grid_given}
        return {a.name: dict(a.params) for a in self.attacks if a.params and a.runs(**given)}

    def describe(self) -> dict[str, Any]:
        """JSON-able record for ``results.json``."""
        return {
            "name": self.name,
            "version": self.version,
            "label": self.label,
            "summary": self.summary,
            "equivalent_to": self.equivalent_to,
            "attacks": [
                {
                    "name": a.name,
                    "params": dict(a.params),
                    "only_with_l2_grid": a.only_with_l2_grid,
                    **({"only_with_l1_grid": True} if a.only_with_l1_grid else {}),
                }
                for a in self.attacks
            ],
            "masking_probes": {
                "examples": self.probes.examples,
                "black_box": self.probes.black_box,
                "black_box_params": dict(self.probes.black_box_params),
            },
        }


_QUICK_ATTACKS = (
    ProtocolAttack("fgsm"),
    # The parameters the shipped default.toml listed (same values as the attacks' defaults), so
    # the default experiment keeps its fingerprint (and resumes) under ``protocol = "quick"``.
    ProtocolAttack(
        "pgd",
        (("random_start", True), ("rel_stepsize", 0.125), ("restarts", 1), ("steps", 20)),
    ),
    ProtocolAttack("cw", (("binary_search_steps", 6), ("steps", 100))),
)
_STANDARD_EXTRA = (
    ProtocolAttack("autoattack"),
    ProtocolAttack("autoattack-l2", only_with_l2_grid=True),
    ProtocolAttack("autoattack-l1", only_with_l1_grid=True),
    ProtocolAttack("fmn"),
)

PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol(
            name="quick",
            version=1,
            summary="FGSM + PGD-20 (1 restart) + C&W L2 (6 x 100 steps)",
            equivalent_to=(
                "the product's pre-protocol default (`--attack fgsm --attack pgd --attack cw`); "
                "weaker than AutoAttack: not a publishable robustness number"
            ),
            attacks=_QUICK_ATTACKS,
            probes=MaskingProbes(examples=200, black_box_params=(("n_queries", 1000),)),
        ),
        Protocol(
            name="standard",
            version=1,
            summary=(
                "quick + AutoAttack standard (APGD-CE, APGD-T, FAB-T, Square; Linf, and L2 where "
                "an L2 grid is given; L1 APGD-CE + APGD-T where an L1 grid is given) + FMN Linf"
            ),
            equivalent_to=(
                "AutoAttack 'standard' (Croce & Hein, ICML 2020) run per epsilon, as RobustBench "
                "reports it, plus FMN minimum norms as in Piras et al. 2024; the per-example worst "
                "case over all attacks is never above AutoAttack's alone"
            ),
            attacks=_QUICK_ATTACKS + _STANDARD_EXTRA,
            # The cascade already runs Square (5,000 queries) on its survivors: --masking sample
            # (the default) reuses that stage; these settings are the full probe's (--masking full)
            # and the sampled probe's on norms without AutoAttack.
            probes=MaskingProbes(examples=200, black_box_params=(("n_queries", 1000),)),
        ),
        Protocol(
            name="thorough",
            version=1,
            summary=(
                "standard + AutoAttack 'plus' (more restarts) + PGD-100 with 5 restarts; "
                "compare with standard to show convergence"
            ),
            equivalent_to=(
                "AutoAttack 'plus' (Croce & Hein, ICML 2020) plus the standard protocol; used to "
                "check that the standard protocol has converged"
            ),
            attacks=(
                ProtocolAttack("fgsm"),
                ProtocolAttack("pgd", (("restarts", 5), ("steps", 100))),
                ProtocolAttack("cw", (("binary_search_steps", 9), ("steps", 200))),
                *_STANDARD_EXTRA,
                ProtocolAttack("autoattack-plus"),
                ProtocolAttack("autoattack-plus-l2", only_with_l2_grid=True),
            ),
            # The cascade already runs Square (5,000 queries) on its survivors: --masking sample
            # (the default) reuses that stage; these settings are the full probe's (--masking full)
            # and the sampled probe's on norms without AutoAttack.
            probes=MaskingProbes(examples=200, black_box_params=(("n_queries", 1000),)),
        ),
    )
}

#: Which protocol attacks are the "standard" part of a thorough run (for the convergence check).
STANDARD_ATTACKS = frozenset(a.name for a in PROTOCOLS["standard"].attacks)


def protocol_names() -> list[str]:
    """Names of the shipped protocols, cheapest first."""
    return list(PROTOCOLS)


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name``; a :class:`UserError` listing the valid names otherwise."""
    if name not in PROTOCOLS:
        raise UserError(f"unknown protocol {name!r}; valid: {', '.join(protocol_names())}")
    return PROTOCOLS[name]


#: Parameters of each attack as its paper / reference code sets them (only those our attacks
#: expose under the same name). ``source`` says where the values come from.
PAPER_DEFAULTS: dict[str, dict[str, Any]] = {
    "pgd": {
        "source": "Madry et al., ICLR 2018 (MNIST: 40 steps of 0.01 at eps 0.3, 1 restart)",
        "steps": 40,
        "restarts": 1,
        "random_start": True,
    },
    "pgd-l2": {
        "source": "Madry et al., ICLR 2018 (40 steps, random start)",
        "steps": 40,
        "random_start": True,
    },
    "cw": {
        "source": "Carlini & Wagner, S&P 2017 (9 binary-search steps x 10,000 iterations, "
        "Adam lr 0.01, c0 = 0.001)",
        "binary_search_steps": 9,
        "steps": 10000,
        "stepsize": 0.01,
        "initial_const": 0.001,
        "confidence": 0.0,
    },
    "fmn": {
        "source": "Pintor et al., NeurIPS 2021 (1,000 steps, alpha0 = 1, gamma0 = 0.05)",
        "steps": 1000,
    },
    "apgd-ce": {
        "source": "Croce & Hein, ICML 2020 (100 iterations, 1 restart, rho 0.75)",
        "steps": 100,
        "n_iter": 100,
        "restarts": 1,
        "n_restarts": 1,
        "rho": 0.75,
    },
    "apgd-t": {
        "source": "Croce & Hein, ICML 2020 (100 iterations, 9 target classes)",
        "steps": 100,
        "n_iter": 100,
        "n_target_classes": 9,
    },
    "fab-t": {
        "source": "Croce & Hein, ICML 2020 (targeted FAB, 100 iterations, 9 target classes)",
        "steps": 100,
        "n_iter": 100,
        "n_target_classes": 9,
    },
    "square": {
        "source": "Andriushchenko et al., ECCV 2020 (5,000 queries, p_init 0.8)",
        "n_queries": 5000,
        "p_init": 0.8,
    },
}
for _name in ("autoattack", "autoattack-l2", "autoattack-plus", "autoattack-plus-l2"):
    PAPER_DEFAULTS.setdefault(_name, {"source": "Croce & Hein, ICML 2020 (AutoAttack)"})
PAPER_DEFAULTS["autoattack-l1"] = {"source": "Croce & Hein, ICML 2021 (AutoAttack L1 standard)"}
PAPER_DEFAULTS["apgd-ce-l1"] = {
    "source": "Croce & Hein, ICML 2021 (l1-APGD; AutoAttack L1 standard: 100 iterations, "
    "5 restarts, use_largereps)",
    "steps": 100,
    "restarts": 5,
    "larger_eps": True,
}
PAPER_DEFAULTS["apgd-t-l1"] = {
    "source": "Croce & Hein, ICML 2021 (l1-APGD-T; AutoAttack L1 standard: 100 iterations, "
    "5 target classes, use_largereps)",
    "steps": 100,
    "n_target_classes": 5,
    "larger_eps": True,
}
for _name in ("apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "square", "fmn"):
    PAPER_DEFAULTS.setdefault(f"{_name}-l2", {**PAPER_DEFAULTS.get(_name, {})})
PAPER_DEFAULTS.setdefault("apgd-dlr", {**PAPER_DEFAULTS["apgd-ce"]})


def paper_deviations(attack_params: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every parameter that differs from the paper's default, one dict per (attack, parameter).

    ``attack_params`` maps an attack name to the parameters it ran with (``Attack.params()``).
    Only parameters listed in :data:`PAPER_DEFAULTS` under the same name are compared. Returns
    dicts with ``attack, parameter, used, paper, source``.
    """
    rows: list[dict[str, Any]] = []
    for attack, params in attack_params.items():
        paper = PAPER_DEFAULTS.get(attack, {})
        for key, used in sorted(params.items()):
            if key == "source" or key not in paper:
                continue
            if used != paper[key]:
                rows.append(
                    {
                        "attack": attack,
                        "parameter": key,
                        "used": used,
                        "paper": paper[key],
                        "source": paper.get("source", ""),
                    }
                )
    return rows


def resolve_attacks(
    protocol: str | None,
    attacks: Sequence[str] | None,
    params: Mapping[str, Mapping[str, Any]],
    *,
    l2_grid_given: bool,
    l1_grid_given: bool = False,
) -> tuple[Protocol | None, list[str], dict[str, dict[str, Any]]]:
    """Turn ``--protocol`` / ``--attack`` / ``--param`` into (protocol, attack names, params).

    Exactly one of ``protocol`` and ``attacks`` may be given; neither means ``quick``. Explicit
    ``params`` override the protocol's (and are listed as deviations in the report). Hand-picked
    ``attacks`` give ``None`` (recorded as :data:`CUSTOM`).
    """
    if protocol is not None and attacks:
        raise UserError("give --protocol or --attack, not both")
    if attacks:
        return None, list(attacks), {k: dict(v) for k, v in params.items()}
    chosen = get_protocol(protocol if protocol is not None else "quick")
    given = {"l2_grid_given": l2_grid_given, "l1_grid_given": l1_grid_given}
    names = chosen.attack_names(**given)
    merged = chosen.params(**given)
    for key, values in params.items():
        if key not in names:
            raise UserError(
                f"parameters for attack {key!r}: it is not in protocol {chosen.name!r} "
                f"({', '.join(names)})"
            )
        merged.setdefault(key, {}).update(values)
    return chosen, names, merged


def describe(protocol: Protocol | None, attacks: Sequence[str]) -> dict[str, Any]:
    """The sidecar's ``protocol`` record; hand-picked attacks are :data:`CUSTOM`."""
    if protocol is not None:
        return protocol.describe()
    return {
        "name": CUSTOM,
        "version": None,
        "label": CUSTOM,
        "summary": "hand-picked attacks: " + ", ".join(attacks),
        "equivalent_to": "no known protocol",
        "attacks": [{"name": a} for a in attacks],
        "masking_probes": MaskingProbes().__dict__ | {"black_box_params": {"n_queries": 1000}},
    }


def identify(specs: Sequence[Any]) -> Protocol | None:
    """The shipped protocol whose attacks and full parameters equal ``specs``, if any.

    ``specs``: :class:`evaluations.engine.grid.AttackSpec`-like objects (``name``, ``backend``,
    ``build()``). Lets ``rbs attack --attack fgsm --attack pgd --attack cw`` be recorded as
    ``quick``: the same attacks with the same parameters are the same protocol.
    """

    if any(s.backend != "native" for s in specs):
        return None
    names = [s.name for s in specs]
    used = {s.name: s.build().params() for s in specs}
    for protocol in PROTOCOLS.values():
        for l2, l1 in ((False, False), (True, False), (False, True), (True, True)):
            given = {"l2_grid_given": l2, "l1_grid_given": l1}
            if sorted(protocol.attack_names(**given)) != sorted(names):
                continue
            params = protocol.params(**given)
            try:
                same = all(get_attack(n, **params.get(n, {})).params() == used[n] for n in names)
            except ValueError:  # an attack of the protocol is not registered
                same = False
            if same:
                return protocol
    return None
