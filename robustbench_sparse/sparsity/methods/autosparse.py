"""``autosparse``: learnable soft thresholds with Gradient Annealing; the sparsity is learned.

Kundu, Mellempudi, Vooturi, Kaul, Dubey, "AutoSparse: Towards Automated Sparse Training of Deep
Neural Networks", arXiv 2304.06941 (2023). No official code exists; the third-party PyTorch
version read is cern-nextgen/PQuantML (``pruning_methods/autosparse.py``), the soft threshold is
STR (Kusupati et al. 2020, RAIVNLab/STR ``utils/conv_type.py`` ``sparseFunction``).

Every pruned weight ``W (K, ...)`` is used as ``W_s = sign(W) · ReLU_GA(|W| - sigmoid(s))``
(:func:`~robustbench_sparse.sparsity.methods.annealing.soft_threshold`), with ``s`` a learnable
threshold logit of shape ``(1, 1)`` per layer (``autosparse_threshold = "layer"``, STR) or
``(K, 1)`` per output channel (``"channel"``, PQuantML's default). GA: where ``|W| <= sigmoid(s)``
the ReLU's derivative is ``alpha`` (not 0), so masked weights and the threshold keep a gradient
and pruned weights can come back. ``alpha`` follows
:func:`~robustbench_sparse.sparsity.methods.annealing.ga_alpha` per epoch with ``alpha0 =
ga_alpha0`` and horizon ``T = end`` epochs, and is 0 from epoch ``ga_alpha_reset · end`` on; after
that the method is plain STR and the masks settle. Sparsity comes from ``s_init``, the weight
decay on ``s`` (it pulls a negative ``s`` toward 0, raising the threshold) and the data; there is
no target. ``target`` is what ``autosparse_search_runs`` bisects the threshold init towards
(:mod:`~robustbench_sparse.sparsity.methods.autosparse_search`); the achieved sparsity is what
the reports show. ``start``, ``initial`` and ``update_every`` are not used (there is no ramp:
the masks are the thresholds' zeros at every step from the first one).

The dense latent ``W`` is trained and the model holds ``W_s`` at every moment
(:class:`~robustbench_sparse.sparsity.methods.latent.LatentSparsifier`): checkpoints, reports,
exports and attacks see an ordinary masked model with exact zeros; the masks are ``W_s != 0``.
At the end of training the weights are *baked*: the latent copies are dropped, the masks freeze
and the model keeps ``W_s`` (kept weights shrunk by ``sigmoid(s)``, as STR and AutoSparse
deploy; masking the raw ``W`` would change the logits).

Decisions where the sources disagree or are silent: ``alpha = alpha0 · decay(t)`` (PQuantML
torch), not compounded (its Keras twin); ``alpha`` during epoch ``t`` (0-based) is the schedule at
``t``; thresholds get the run's weight decay in their own optimizer group (2-D anyway); the
first conv and the classifier stay dense unless ``prune_first_conv`` / ``prune_classifier`` (the
same layers as every other method here; STR prunes all). Unstructured only: the configuration
normalises ``granularity`` to ``unstructured`` (as for ``gmp``); a structured budget with GA is
``campfire-ga``.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

from robustbench_sparse.sparsity.base import PrunedLayer
from robustbench_sparse.sparsity.config import PruningMethod, SparsityConfig
from robustbench_sparse.sparsity.methods.annealing import ga_alpha, soft_threshold
from robustbench_sparse.sparsity.methods.latent import LatentSparsifier

logger = logging.getLogger(__name__)

__all__ = ["AutoSparseSparsifier"]


class AutoSparseSparsifier(LatentSparsifier):
    """AutoSparse: STR thresholds + Gradient Annealing, baked into a masked model at the end.

    :attr:`thresholds` maps each pruned weight's name to its ``s`` (``(1, 1)`` or ``(K, 1)``);
    :attr:`current_sparsity` is the *achieved* fraction of zeros over the pruned layers.
    """

    def __init__(self, config: SparsityConfig, steps_per_epoch: int) -> None:
        if config.method is not PruningMethod.AUTOSPARSE:
            raise ValueError(
                f"AutoSparseSparsifier needs method 'autosparse', got {config.method.value!r}"
            )
        super().__init__(config, steps_per_epoch)
        self.thresholds: dict[str, nn.Parameter] = {}
        self.alpha = self.alpha_at(0)

    # ------------------------------------------------------------------ schedule
    def alpha_at(self, epoch: float) -> float:
        """GA's ``alpha`` during epoch ``epoch`` (0-based) under this config."""
        horizon = self.config.end
        return ga_alpha(epoch, self.config.ga_alpha0, horizon, self.config.ga_alpha_reset * horizon)

    # ------------------------------------------------------------------ LatentSparsifier hooks
    def prepare(self, model: nn.Module) -> None:
        """Create the thresholds (``autosparse_threshold_init``), then the latent machinery."""
        params = dict(model.named_parameters())
        for name in self.select_layers(model):
            weight = params[name]
            rows = weight.shape[0] if self.config.autosparse_threshold == "channel" else 1
            init = torch.full(
                (rows, 1),
                self.config.autosparse_threshold_init,
                dtype=weight.dtype,
                device=weight.device,
            )
            self.thresholds[name] = nn.Parameter(init)
        super().prepare(model)
        logger.info(
            "autosparse: %d layers, %s thresholds from s=%g, alpha0 %g reset at epoch %g; "
            "initial sparsity %.4f",
            len(self.thresholds),
            self.config.autosparse_threshold,
            self.config.autosparse_threshold_init,
            self.config.ga_alpha0,
            self.config.ga_alpha_reset * self.config.end,
            self._sparsity,
        )

    def attach_optimizer(self, optimizer: torch.optim.Optimizer, weight_decay: float) -> None:
        """Thresholds join ``optimizer`` with ``autosparse_threshold_decay`` (default: the run's)."""
        decay = self.config.autosparse_threshold_decay
        super().attach_optimizer(optimizer, weight_decay if decay is None else decay)

    def extra_parameters(self) -> dict[str, nn.Parameter]:
        """The threshold logits ``s``, keyed ``"<weight name>.threshold"``."""
        return {f"{n}.threshold": s for n, s in self.thresholds.items()}

    def effective(self, name: str, latent: Tensor) -> Tensor:
        """``sign(W) · ReLU_GA(|W| - sigmoid(s))`` at the current ``alpha``."""
        return soft_threshold(latent, self.thresholds[name], self.alpha)

    def after_refresh(self, layer: PrunedLayer) -> None:
        """The mask is the non-zeros of ``W_s``."""
        layer.set_mask(layer.param != 0)

    def apply_masks(self) -> None:
        """Refresh ``W_s`` and the masks, then the achieved sparsity over the pruned layers."""
        super().apply_masks()
        total = sum(layer.mask.numel() for layer in self._layers.values())
        kept = sum(int(layer.mask.sum()) for layer in self._layers.values())
        self._sparsity = 1.0 - kept / max(total, 1)

    # ------------------------------------------------------------------ training hooks
    def on_epoch_end(self, epoch: int) -> None:
        """Set ``alpha`` for epoch ``epoch + 1`` and log the achieved sparsity."""
        self.alpha = self.alpha_at(epoch + 1)
        logger.info(
            "autosparse epoch %d: achieved sparsity %.4f (target %.4f), next alpha %.4g",
            epoch + 1,
            self._sparsity,
            self.config.target,
            self.alpha,
        )

    def on_train_end(self, epochs: int) -> None:
        """Bake: the model keeps ``W_s``, the masks freeze, the latent weights are dropped."""
        if not self.latent_active:
            return
        self.finish_latent()
        logger.info(
            "autosparse: baked after %d epochs; achieved sparsity %.4f (target %.4f)",
            epochs,
            self._sparsity,
            self.config.target,
        )

    def freeze(self) -> None:
        """Bake now (see :meth:`on_train_end`)."""
        self.finish_latent()
