"""``hydra``: importance scores learned with the robust loss while the weights are frozen.

Sehwag, Wang, Mittal, Jana, "HYDRA: Pruning Adversarially Robust Neural Networks", NeurIPS 2020
(arXiv 2002.10509; reference code github.com/inspire-group/hydra).

HYDRA has three phases: (1) train the dense network (adversarially), (2) *prune*: freeze the
weights ``w`` and learn a floating-point importance score ``s`` per weight by minimising the
training loss (adversarial: PGD-AT or TRADES) of the sub-network ``w ⊙ m(s)``, where ``m(s)``
keeps the ``k`` largest ``|s|`` of every layer and the gradient reaches ``s`` straight through
``m`` (``∂L/∂s = ∂L/∂(w ⊙ m) ⊙ w``), (3) *fine-tune* the kept weights with the mask fixed.

In this project one ``fit`` run holds all three: epochs ``[0, start)`` are the dense (adversarial)
pre-training, at the first optimizer step ``t >= epochs_to_steps(start)`` the
:meth:`HydraSparsifier.on_batch_start` hook (which ``fit`` calls before every step) runs
:meth:`HydraSparsifier.learn_scores` with the run's own robust loss (the same
:mod:`robustbench_sparse.adversarial` method and threat model, at the full budget) for
``hydra_score_epochs`` passes over the training set, and the remaining epochs fine-tune with the
masks frozen. The score-learning passes are extra work on top of ``epochs``.

As in the reference code, scores start as ``sqrt(6 / fan_in) · w / max|w|`` (so the initial mask
is the magnitude mask), are optimised with SGD (momentum 0.9, weight decay 1e-4, cosine
learning-rate decay from ``hydra_score_lr``), and the mask is layer-wise top-k.

Structured variant (not in the paper; what its users asked for): with ``granularity`` window /
channel / combined, ``m(s)`` is Campfire's structured mask of ``|s|``
(:func:`robustbench_sparse.sparsity.masks.compute_mask`), i.e. the same top-k constrained to keep
the same number of weights per 3x3 window, per filter, or both; ``unstructured`` is HYDRA as
published.

Deviations from the reference code: the reference loads a separately pre-trained checkpoint and
runs score learning for 20 epochs (CIFAR) as its own job; here they are phases of one run, and
score learning uses seeded shuffled batches of the training split (not sharded under DDP: every
rank learns the same scores, rank 0's masks are broadcast). BatchNorm is in train mode during
score learning (running statistics adapt to the sub-network, as in the reference); every other
parameter is frozen too, whereas the reference leaves the BatchNorm affine parameters trainable
(its ``--freeze-bn`` is off by default). The reference replaces *every* conv / linear layer by a
scored one (first conv and classifier included); here the layers are Campfire's selection
(first conv and classifier dense unless ``prune_first_conv`` / ``prune_classifier``), so the
methods compare on the same layers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sized

import torch
from torch import Tensor, nn
from torch.func import functional_call

from robustbench_sparse.sparsity.base import LossFn, TrainingContext
from robustbench_sparse.sparsity.config import PruningMethod, SparsityConfig
from robustbench_sparse.sparsity.masks import compute_mask
from robustbench_sparse.sparsity.methods._base import PruneAtInitSparsifier

logger = logging.getLogger(__name__)


def initial_scores(weight: Tensor) -> Tensor:
    """HYDRA's scaled initialisation ``sqrt(6 / fan_in) · w / max|w|`` (same shape as ``w``)."""
    fan_in = weight[0].numel()
    top = weight.detach().abs().max().clamp_min(1e-12)
    return math.sqrt(6.0 / fan_in) * weight.detach() / top


class _ScoredNetwork(nn.Module):
    """``model`` with every scored weight replaced by ``w ⊙ m(s)`` (straight-through to ``s``)."""

    def __init__(
        self,
        model: nn.Module,
        weights: dict[str, Tensor],
        scores: dict[str, Tensor],
        mask_of: Callable[[str, Tensor], Tensor],
    ) -> None:
        super().__init__()
        self.model = model
        self.weights = weights
        self.scores = scores
        self.mask_of = mask_of
        self.masks: dict[str, Tensor] = {}
        self.refresh()

    def refresh(self) -> None:
        """Recompute the hard masks from the current scores (after every score update)."""
        with torch.no_grad():
            self.masks = {n: self.mask_of(n, s.detach().abs()) for n, s in self.scores.items()}

    def forward(self, x: Tensor) -> Tensor:
        override = {}
        for name, s in self.scores.items():
            m = self.masks[name].to(s.dtype)
            # Value m (the hard mask), gradient 1 wrt s: the straight-through estimator.
            override[name] = self.weights[name] * (m + s - s.detach())
        return functional_call(self.model, override, (x,), strict=False)  # type: ignore[no-any-return]


class HydraSparsifier(PruneAtInitSparsifier):
    """HYDRA: masks from importance scores learned at epoch ``start``, fixed afterwards.

    Until :meth:`learn_scores` ran the model is dense (all-True masks, not frozen);
    :meth:`on_batch_start` runs it as soon as :attr:`scores_due`.
    """

    def __init__(self, config: SparsityConfig, steps_per_epoch: int) -> None:
        if config.method is not PruningMethod.HYDRA:
            raise ValueError(f"HydraSparsifier needs method 'hydra', got {config.method.value!r}")
        super().__init__(config, steps_per_epoch)

    @property
    def scores_due(self) -> bool:
        """True once the dense pre-training is over and the scores have not been learned yet."""
        return not self.frozen and self.step_count >= self.start_step and bool(self._layers)

    def on_batch_start(self, context: TrainingContext) -> bool:
        """Learn the scores (and fix the masks) at the first step of epoch ``start``.

        The passes read the run's seeded batches (pass ``k`` seeded ``seed * 7919 + k``) and
        the run's own training loss; True when the masks were set here.
        """
        if not self.scores_due:
            return False
        seed = context.seed

        def passes(k: int) -> Iterable[tuple[Tensor, Tensor]]:
            return context.batches(seed * 7919 + k)

        self.learn_scores(context.model, passes, context.loss, seed=seed)
        return True

    def learn_scores(
        self,
        model: nn.Module,
        passes: Callable[[int], Iterable[tuple[Tensor, Tensor]]],
        loss_fn: LossFn,
        *,
        seed: int = 0,
    ) -> None:
        """Learn the scores with ``loss_fn`` over ``hydra_score_epochs`` passes, install the masks.

        ``passes(k)`` yields the training batches ``(x (N, ...), y (N,))`` of pass ``k``. The
        weights of ``model`` are not changed (every parameter is frozen meanwhile; BatchNorm
        running statistics do adapt). The global RNG (adversarial random starts) is forked and
        seeded with ``seed``, so the learned masks are reproducible and resumable.
        """
        epochs = self.config.hydra_score_epochs
        weights = {n: p.detach() for n, p in self.weights.items()}
        scores = {n: initial_scores(w).requires_grad_(True) for n, w in weights.items()}
        target = self.config.target

        def mask_of(name: str, magnitude: Tensor) -> Tensor:
            return compute_mask(magnitude, target, self.config.granularity)

        net = _ScoredNetwork(model, weights, scores, mask_of)
        optimizer = torch.optim.SGD(
            list(scores.values()), lr=self.config.hydra_score_lr, momentum=0.9, weight_decay=1e-4
        )
        flags = [(p, p.requires_grad) for p in model.parameters()]
        was_training = model.training
        devices = [p.device for p in weights.values() if p.device.type == "cuda"][:1]
        step = 0
        try:
            for p, _ in flags:
                p.requires_grad_(False)
            model.train()
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed)
                for k in range(epochs):
                    batches = passes(k)
                    per_pass = len(batches) if isinstance(batches, Sized) else self.steps_per_epoch
                    total = max(epochs * per_pass, 1)
                    for x, y in batches:
                        progress = min(step / total, 1.0)
                        for group in optimizer.param_groups:
                            group["lr"] = (
                                self.config.hydra_score_lr
                                * 0.5
                                * (1.0 + math.cos(math.pi * progress))
                            )
                        loss = loss_fn(net, x, y)
                        optimizer.zero_grad(set_to_none=True)
                        loss.backward()
                        optimizer.step()
                        net.refresh()
                        step += 1
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)
            model.train(was_training)
        logger.info(
            "hydra: learned scores over %d pass(es) (%d steps) at step %d; masks fixed at %.3f",
            epochs,
            step,
            self.step_count,
            target,
        )
        self._install({n: m.to(torch.bool) for n, m in net.masks.items()})
