"""The sparsity configuration: a frozen, validated dataclass that round-trips through dicts/TOML."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from robustbench_sparse.errors import UserError, unknown_name
from robustbench_sparse.sparsity.granularity import DEFAULT_NM, Granularity, parse_nm


class PruningMethod(str, Enum):
    """Which pruning family builds the masks (all behind the same sparsifier interface).

    - ``CAMPFIRE``: gradual magnitude pruning to a structured ``granularity`` (the default).
    - ``GMP``: Zhu & Gupta gradual magnitude pruning, unstructured and layer-wise: the baseline
      Campfire restricts. Numerically it *is* Campfire with ``granularity = "unstructured"`` (same
      schedule, same masks); the separate name labels it as the comparison baseline.
    - ``RANDOM``: random masks drawn at initialization and fixed (Liu et al., ICLR 2022), with
      layer-wise ``uniform`` or ``erk`` densities (``random_distribution``).
    - ``GRASP``: GraSP pruning at initialization (Wang et al., ICLR 2020), masks fixed afterwards.
    - ``FILTER``: whole output filters removed by norm on the gradual schedule; the BatchNorm that
      consumes a pruned filter is masked too, so the channel outputs exactly zero.
    - ``HYDRA``: HYDRA (Sehwag et al., NeurIPS 2020): importance scores learned with the
      (robust) training loss while the weights are frozen, at epoch ``start``; masks fixed for
      the fine-tuning that follows. Unstructured as published, or constrained to ``granularity``.
    - ``TOST``: ToST (Jaiswal et al., ICML 2022): the training recipe for a fixed mask (a
      Campfire mask of ``granularity`` at init, a random one, or ``mask_from`` a checkpoint's):
      ghost activations and 1x1 skip paths annealed away over ``start``..``end``, ToST's label
      smoothing, layer-wise rescaled init (:mod:`robustbench_sparse.sparsity.methods.tost`).
    - ``CALIBRATED``: post-training, not a training method (``rbs prune --method calibrated``,
      :mod:`robustbench_sparse.posttrain.calibrated`; Lazarevich et al. 2021): a trained dense
      model pruned once (unstructured: one global ranking of layer-normalised magnitudes;
      otherwise Campfire's one-shot masks), weights corrected, layers fitted on calibration data.
      Recorded in checkpoints so their sparsity reports rebuild; no sparsifier trains with it.
    - ``AUTOSPARSE``: AutoSparse (Kundu et al. 2023): STR soft thresholds
      ``sign(W) ReLU(|W| - sigmoid(s))`` with learnable ``s`` and Gradient Annealing; the sparsity
      is learned (``target`` is only what ``autosparse_search_runs`` aims at). Unstructured.
    - ``CAMPFIRE_GA``: "GA on top-k": Campfire's structured masks of ``granularity`` on its cubic
      schedule, with an alpha-scaled gradient at pruned positions until ``end`` (masks may
      change back until they freeze).
    """

    CAMPFIRE = "campfire"
    GMP = "gmp"
    RANDOM = "random"
    GRASP = "grasp"
    FILTER = "filter"
    HYDRA = "hydra"
    TOST = "tost"
    CALIBRATED = "calibrated"
    AUTOSPARSE = "autosparse"
    CAMPFIRE_GA = "campfire-ga"

    @classmethod
    def parse(cls, value: str | PruningMethod) -> PruningMethod:
        """Return the member for ``value``; raise ``UserError`` listing the valid names otherwise."""
        return _parse_enum(cls, "pruning method", value)


class LayerDistribution(str, Enum):
    """How a global target is split across layers (``random`` pruning).

    ``UNIFORM``: every pruned layer gets the target. ``ERK``: Erdős–Rényi-Kernel densities
    (Evci et al. 2020), ``density_l ∝ (n_in + n_out + k_h + k_w) / (n_in · n_out · k_h · k_w)``,
    scaled so the pruned layers together meet the target, layers that would exceed density 1 dense.
    """

    UNIFORM = "uniform"
    ERK = "erk"

    @classmethod
    def parse(cls, value: str | LayerDistribution) -> LayerDistribution:
        """Return the member for ``value``; raise ``UserError`` listing the valid names otherwise."""
        return _parse_enum(cls, "random_distribution", value)


class FilterNorm(str, Enum):
    """Which norm of a filter ``W[k]`` ranks it for ``filter`` pruning."""

    L1 = "l1"
    L2 = "l2"

    @classmethod
    def parse(cls, value: str | FilterNorm) -> FilterNorm:
        """Return the member for ``value``; raise ``UserError`` listing the valid names otherwise."""
        return _parse_enum(cls, "filter_norm", value)


def _parse_enum(cls: Any, kind: str, value: Any) -> Any:
    if isinstance(value, cls):
        return value
    if isinstance(value, str):
        key = value.strip().lower()
        for member in cls:
            if member.value == key:
                return member
    raise unknown_name(kind, str(value), [m.value for m in cls])


_UNSTRUCTURED_METHODS = ("gmp", "random", "grasp", "autosparse")
AUTOSPARSE_THRESHOLDS = ("layer", "channel")  # one threshold per layer / per output channel
TOST_MASKS = ("campfire", "random")  # where ToST's fixed mask comes from (without mask_from)
TOST_ACTIVATIONS = ("swish", "softplus", "gelu", "relu")  # relu: no ghost activations


@dataclass(frozen=True)
class SparsityConfig:
    """How a model is pruned (Campfire by default; see :class:`PruningMethod` for the others).

    Attributes:
        target: final sparsity ``s_f`` in ``[0, 1)``; ``0`` means dense (the sparsifier is a no-op).
        granularity: which group keeps the same number of weights (see :class:`Granularity`).
        initial: sparsity ``s_i`` applied at ``start`` (``0 <= initial <= target``).
        start: epoch (may be fractional) where the cubic ramp starts (``t0``).
        end: epoch where the final target is reached and masks freeze (``t1``).
        update_every: optimizer steps between mask updates during the ramp.
        include: fnmatch patterns on module names (e.g. ``"net.layer1.*"``); empty = all eligible.
        exclude: fnmatch patterns on module names removed from the selection.
        prune_first_conv: also prune the first ``Conv2d`` (dense by default).
        prune_classifier: also prune the last ``Linear`` (dense by default).
        method: the pruning family (:class:`PruningMethod`). ``gmp``, ``random`` and ``grasp``
            are unstructured: their ``granularity`` is normalised to ``unstructured``. ``filter``
            ignores ``granularity``. ``random`` and ``grasp`` prune at initialization and ignore
            ``initial`` / ``start`` / ``end`` / ``update_every``.
        random_distribution: layer-wise densities of ``random`` (``uniform`` or ``erk``).
        grasp_batches: training batches GraSP scores the weights on (at initialization).
        grasp_temperature: GraSP's softmax temperature ``T`` (logits / T; the paper uses 200).
        filter_norm: the norm ranking filters for ``filter`` pruning (``l2`` or ``l1``).
        hydra_score_epochs: passes over the training set that HYDRA's scores are learned for.
        hydra_score_lr: SGD learning rate of HYDRA's scores (cosine-decayed; paper: 0.1).
        nm: ``"N:M"`` of granularity ``nm`` (default ``"2:4"``): every group of ``M``
            consecutive input channels keeps ``N``; a ``target`` above ``1 - N/M`` also removes
            whole filters. Ignored by the other granularities.
        tost_mask: ``tost``'s fixed mask without ``mask_from``: ``campfire`` (``granularity``
            at ``target`` from the initial weights' magnitudes) or ``random``
            (``random_distribution`` densities). ``tost`` anneals its ghosts over
            ``start``..``end`` (epochs) and removes them at ``end``.
        mask_from: ``tost`` only: a checkpoint directory whose saved masks are trained (its
            pruned layers and shapes must match this model); with the same seed this is
            lottery-ticket rewinding to the initialization.
        tost_activation: ``tost``'s ghost activation blended into every ``nn.ReLU`` module
            (``swish``, ``softplus``, ``gelu``; ``relu`` = none).
        tost_skip: ``tost``: ghost 1x1 paths parallel to every pruned convolution.
        tost_label_smoothing: ToST's label smoothing ``alpha``: target ``1 - alpha`` on the
            true class, ``alpha / (C - 1)`` on every other (0 = none).
        tost_rescale: ``tost``: rescale each pruned layer's kept initial weights by
            ``1 / sqrt(density)`` (its output variance at init stays the dense layer's).
        ga_alpha0: Gradient Annealing's initial ``alpha`` (``autosparse``, ``campfire-ga``;
            AutoSparse's preset 0.75): the gradient factor at masked positions, decayed per
            epoch as ``alpha0 · max(cos, sigmoid decay)`` over ``end`` epochs.
        ga_alpha_reset: ``autosparse``: ``alpha`` is 0 from epoch ``ga_alpha_reset · end`` on
            (preset 0.9: epoch 90 of 100), so the masks settle. ``campfire-ga`` resets at ``end``.
        autosparse_threshold_init: initial threshold logit ``s`` (preset -5: ``sigmoid = 0.0067``).
        autosparse_threshold: ``layer`` (one ``s`` per layer, STR) or ``channel`` (one per
            output channel).
        autosparse_threshold_decay: the thresholds' weight decay (``None``: the run's
            ``weight_decay``). It pulls ``s`` toward 0, raising the thresholds: STR's sparsity knob.
        autosparse_search_runs: 0 (default): one run, learned sparsity. ``n > 0``: up to ``n``
            extra training runs search ``autosparse_threshold_decay`` (log scale) until the
            achieved sparsity is within ``autosparse_tolerance`` of ``target``; the final run
            uses it (:mod:`robustbench_sparse.autosparse_search`).
        autosparse_tolerance: the search's accepted ``|achieved - target|`` (default 0.02).
    """

    target: float = 0.0
    granularity: Granularity = Granularity.WINDOW
    initial: float = 0.0
    start: float = 0.0
    end: float = 1.0
    update_every: int = 50
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    prune_first_conv: bool = False
    prune_classifier: bool = False
    method: PruningMethod = PruningMethod.CAMPFIRE
    random_distribution: LayerDistribution = LayerDistribution.UNIFORM
    grasp_batches: int = 4
    grasp_temperature: float = 200.0
    filter_norm: FilterNorm = FilterNorm.L2
    hydra_score_epochs: int = 1
    hydra_score_lr: float = 0.1
    nm: str = DEFAULT_NM
    tost_mask: str = "campfire"
    mask_from: str | None = None
    tost_activation: str = "swish"
    tost_skip: bool = True
    tost_label_smoothing: float = 0.1
    tost_rescale: bool = True
    ga_alpha0: float = 0.75
    ga_alpha_reset: float = 0.9
    autosparse_threshold_init: float = -5.0
    autosparse_threshold: str = "layer"
    autosparse_threshold_decay: float | None = None
    autosparse_search_runs: int = 0
    autosparse_tolerance: float = 0.02

    def __post_init__(self) -> None:
        # Normalise the types that TOML/JSON produce (str granularity, lists, ints for floats).
        object.__setattr__(self, "granularity", Granularity.parse(self.granularity))
        object.__setattr__(self, "method", PruningMethod.parse(self.method))
        object.__setattr__(
            self, "random_distribution", LayerDistribution.parse(self.random_distribution)
        )
        object.__setattr__(self, "filter_norm", FilterNorm.parse(self.filter_norm))
        object.__setattr__(
            self, "grasp_temperature", _as_float("grasp_temperature", self.grasp_temperature)
        )
        if self.method.value in _UNSTRUCTURED_METHODS:
            object.__setattr__(self, "granularity", Granularity.UNSTRUCTURED)
        for name in ("target", "initial", "start", "end"):
            object.__setattr__(self, name, _as_float(name, getattr(self, name)))
        for name in ("include", "exclude"):
            object.__setattr__(self, name, _as_patterns(name, getattr(self, name)))
        for name in ("prune_first_conv", "prune_classifier"):
            if not isinstance(getattr(self, name), bool):
                raise UserError(
                    f"sparsity {name} must be true or false, got {getattr(self, name)!r}"
                )
        object.__setattr__(self, "hydra_score_lr", _as_float("hydra_score_lr", self.hydra_score_lr))
        for name in ("update_every", "grasp_batches", "hydra_score_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise UserError(f"sparsity {name} must be an integer, got {value!r}")

        if not 0.0 <= self.target < 1.0:
            raise UserError(f"sparsity target must be in [0, 1), got {self.target}")
        if not 0.0 <= self.initial <= self.target:
            raise UserError(
                f"sparsity initial must be in [0, target={self.target}], got {self.initial}"
            )
        if self.start < 0.0:
            raise UserError(f"sparsity start must be >= 0 epochs, got {self.start}")
        if self.end < self.start:
            raise UserError(f"sparsity end ({self.end}) must be >= start ({self.start}) (epochs)")
        if self.update_every < 1:
            raise UserError(f"sparsity update_every must be >= 1, got {self.update_every}")
        if self.hydra_score_epochs < 1:
            raise UserError(
                f"sparsity hydra_score_epochs must be >= 1, got {self.hydra_score_epochs}"
            )
        if not self.hydra_score_lr > 0.0:
            raise UserError(f"sparsity hydra_score_lr must be > 0, got {self.hydra_score_lr}")
        self._check_nm()
        self._check_tost()
        self._check_ga()
        if self.grasp_batches < 1:
            raise UserError(f"sparsity grasp_batches must be >= 1, got {self.grasp_batches}")
        if not self.grasp_temperature > 0.0:
            raise UserError(f"sparsity grasp_temperature must be > 0, got {self.grasp_temperature}")

    def _check_nm(self) -> None:
        n, m = parse_nm(self.nm)
        object.__setattr__(self, "nm", f"{n}:{m}")
        if self.granularity is not Granularity.NM:
            return
        if self.method not in (PruningMethod.CAMPFIRE, PruningMethod.FILTER):
            raise UserError(
                f"granularity nm works with method campfire only, not {self.method.value}; "
                "use window / channel / combined / unstructured with it"
            )
        floor = 1.0 - n / m
        if self.method is PruningMethod.CAMPFIRE and 0.0 < self.target < floor - 1e-9:
            raise UserError(
                f"granularity nm {n}:{m} prunes at least {floor:.0%} (N of every M kept): set "
                f"the sparsity target to >= {floor:g} (above it whole filters go), or another nm"
            )

    def _check_tost(self) -> None:
        for name, valid in (("tost_mask", TOST_MASKS), ("tost_activation", TOST_ACTIVATIONS)):
            value = getattr(self, name)
            if not isinstance(value, str) or value.strip().lower() not in valid:
                raise unknown_name(f"sparsity {name}", str(value), list(valid))
            object.__setattr__(self, name, value.strip().lower())
        for name in ("tost_skip", "tost_rescale"):
            if not isinstance(getattr(self, name), bool):
                raise UserError(
                    f"sparsity {name} must be true or false, got {getattr(self, name)!r}"
                )
        alpha = _as_float("tost_label_smoothing", self.tost_label_smoothing)
        object.__setattr__(self, "tost_label_smoothing", alpha)
        if not 0.0 <= alpha < 1.0:
            raise UserError(f"sparsity tost_label_smoothing must be in [0, 1), got {alpha}")
        if self.mask_from is not None:
            if not isinstance(self.mask_from, str) or not self.mask_from:
                raise UserError(
                    f"sparsity mask_from must be a checkpoint path, got {self.mask_from!r}"
                )
            if self.method is not PruningMethod.TOST:
                raise UserError(
                    f"--mask-from (sparsity mask_from) applies to --method tost only, not "
                    f"{self.method.value}"
                )

    def _check_ga(self) -> None:
        for name in ("ga_alpha0", "ga_alpha_reset", "autosparse_threshold_init"):
            object.__setattr__(self, name, _as_float(name, getattr(self, name)))
        object.__setattr__(
            self,
            "autosparse_tolerance",
            _as_float("autosparse_tolerance", self.autosparse_tolerance),
        )
        if not 0.0 <= self.ga_alpha0 <= 1.0:
            raise UserError(f"sparsity ga_alpha0 must be in [0, 1], got {self.ga_alpha0}")
        if not 0.0 < self.ga_alpha_reset <= 1.0:
            raise UserError(f"sparsity ga_alpha_reset must be in (0, 1], got {self.ga_alpha_reset}")
        value = self.autosparse_threshold
        if not isinstance(value, str) or value.strip().lower() not in AUTOSPARSE_THRESHOLDS:
            raise unknown_name("sparsity autosparse_threshold", str(value), AUTOSPARSE_THRESHOLDS)
        object.__setattr__(self, "autosparse_threshold", value.strip().lower())
        decay = self.autosparse_threshold_decay
        if decay is not None:
            decay = _as_float("autosparse_threshold_decay", decay)
            object.__setattr__(self, "autosparse_threshold_decay", decay)
            if decay < 0.0:
                raise UserError(f"sparsity autosparse_threshold_decay must be >= 0, got {decay}")
        runs = self.autosparse_search_runs
        if isinstance(runs, bool) or not isinstance(runs, int) or runs < 0:
            raise UserError(
                f"sparsity autosparse_search_runs must be an integer >= 0, got {runs!r}"
            )
        if not 0.0 < self.autosparse_tolerance < 0.5:
            raise UserError(
                f"sparsity autosparse_tolerance must be in (0, 0.5), got {self.autosparse_tolerance}"
            )
        ga = (PruningMethod.AUTOSPARSE, PruningMethod.CAMPFIRE_GA)
        if self.method in ga and self.target > 0.0 and not self.end > 0.0:
            raise UserError(
                f"--method {self.method.value} decays its gradient-annealing alpha over "
                "--prune-end epochs: set --prune-end > 0"
            )

    @property
    def nm_pair(self) -> tuple[int, int]:
        """``nm`` as ``(N, M)``."""
        return parse_nm(self.nm)

    @property
    def dense(self) -> bool:
        """True when nothing is pruned (``target == 0``)."""
        return self.target == 0.0

    @property
    def label(self) -> str:
        """What the results table calls this structure (``granularity`` column, model names).

        Campfire: its granularity (``window``, ``channel``, ``combined``, ``unstructured``), as
        before. Other methods: ``gmp``, ``random-uniform`` / ``random-erk``, ``grasp``, ``filter``.
        """
        if self.method is PruningMethod.CAMPFIRE:
            if self.granularity is Granularity.NM and self.nm != DEFAULT_NM:
                return f"nm{self.nm.replace(':', 'of')}"  # "nm1of4": no ':' in file names
            return self.granularity.value
        if self.method is PruningMethod.RANDOM:
            return f"random-{self.random_distribution.value}"
        if self.method is PruningMethod.TOST:
            if self.mask_from is not None:
                return "tost-masks"  # the checkpoint's masks, whatever their structure
            if self.tost_mask == "random":
                return f"tost-random-{self.random_distribution.value}"
            return f"tost-{self.granularity.value}"
        if self.method is PruningMethod.CAMPFIRE_GA:  # nm is refused for it (_check_nm)
            return f"{self.granularity.value}-ga"
        if self.method in (PruningMethod.HYDRA, PruningMethod.CALIBRATED):
            g, name = self.granularity, self.method.value
            return name if g is Granularity.UNSTRUCTURED else f"{name}-{g.value}"
        return self.method.value

    def to_dict(self) -> dict[str, Any]:
        """JSON/TOML-safe dict (granularity as its string value, patterns as lists)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Enum):
                value = value.value
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SparsityConfig:
        """Build from a dict such as a TOML table; unknown keys raise ``UserError`` with a hint."""
        if not isinstance(d, Mapping):
            raise UserError(f"sparsity config must be a table/dict, got {type(d).__name__}")
        valid = [f.name for f in dataclasses.fields(cls)]
        for key in d:
            if key not in valid:
                raise unknown_name("sparsity option", str(key), valid)
        return cls(**dict(d))


def _as_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UserError(f"sparsity {name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise UserError(f"sparsity {name} must be finite, got {value!r}")
    return float(value)


def _as_patterns(name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        raise UserError(f"sparsity {name} must be a list of patterns, got the string {value!r}")
    try:
        items = tuple(value)
    except TypeError:
        raise UserError(f"sparsity {name} must be a list of patterns, got {value!r}") from None
    for item in items:
        if not isinstance(item, str) or not item:
            raise UserError(f"sparsity {name} patterns must be non-empty strings, got {item!r}")
    return items
