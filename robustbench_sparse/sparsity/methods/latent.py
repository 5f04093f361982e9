"""Sparsifiers that train dense *latent* weights while the model holds their sparse image.

Gradient Annealing (``autosparse``, ``campfire-ga``) needs a gradient at pruned positions, so a
pruned weight can grow back. The usual machinery (gradient hooks zeroing pruned gradients, masks
re-applied after every step) forbids exactly that. :class:`LatentSparsifier` keeps, for every
pruned weight ``P`` of the model, a dense latent copy ``W`` and makes the model hold
``P = effective(W)`` (the sparse weight: exact ``+0.0`` at pruned positions) at all times outside
the optimizer step, so forward passes, evaluation, checkpoints (``model.state_dict()``), exports
and attacks always see an ordinary masked model. The training step is::

    forward/backward with P = effective(W)      # dL/dP = g
    gradient hook on P: dL/dW, dL/dextra = vjp of effective at W with g   # GA lives here
    optimizer step pre-hook: P <- W             # the optimizer updates W (and its momentum)
    optimizer.step()
    sparsifier.step(): W <- P; P <- effective(W); masks <- effective(W) != 0

``effective`` is written with autograd (:meth:`LatentSparsifier.effective`); the hook takes its
vector-Jacobian product with ``torch.autograd.grad``, so the gradient is exactly the one autograd
would give through a parametrisation, without changing the model's parameters or state-dict keys.
Extra trainable tensors (AutoSparse's thresholds) are added to the run's optimizer by
:meth:`attach_optimizer` (their own group, with the run's weight decay) and saved in
:meth:`state_dict`. When GA ends (:meth:`finish_latent`) the latent copies are dropped, the
ordinary gradient hooks return and the base class keeps the masks fixed.

Multi-process training is refused: the hook's extra gradients are per rank (not all-reduced).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from robustbench_sparse.errors import UserError
from robustbench_sparse.sparsity.base import GradMask, PrunedLayer, Sparsifier

logger = logging.getLogger(__name__)

__all__ = ["LatentSparsifier"]


class LatentSparsifier(Sparsifier):
    """Base of the GA methods: dense latent weights, the model holding ``effective(W)``.

    Subclasses give :meth:`effective` (autograd-capable, shape-preserving) and may own extra
    trainable tensors (:meth:`extra_parameters`). ``alpha`` is the current GA factor.
    """

    def __init__(self, config: Any, steps_per_epoch: int) -> None:
        super().__init__(config, steps_per_epoch)
        self.alpha = 0.0
        self._latent: dict[str, Tensor] = {}
        self._hook_handles: list[RemovableHandle] = []
        self._optimizer: torch.optim.Optimizer | None = None
        self._opt_handle: RemovableHandle | None = None
        self._swapped = False

    # ------------------------------------------------------------------ subclass hooks
    def effective(self, name: str, latent: Tensor) -> Tensor:
        """The sparse weight the model holds for latent weight ``latent`` (same shape)."""
        raise NotImplementedError

    def extra_parameters(self) -> dict[str, nn.Parameter]:
        """Trainable tensors owned by the sparsifier (default none), keyed by a stable name."""
        return {}

    @property
    def latent_active(self) -> bool:
        """True while the latent weights are trained (before :meth:`finish_latent`)."""
        return bool(self._latent)

    # ------------------------------------------------------------------ lifecycle
    def prepare(self, model: nn.Module) -> None:
        """Select the layers, copy their weights as latent weights, install the GA hooks."""
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            raise UserError(
                f"--method {self.config.method.value} trains on one process only; "
                "run without --nproc (or --nproc 1)"
            )
        params = dict(model.named_parameters())
        names = self.select_layers(model)
        self._latent = {n: params[n].detach().clone() for n in names}
        super().prepare(model)  # records + base hooks, then a first update (apply_masks below)
        for layer in self._layers.values():
            layer.remove_hooks()  # the base hooks zero pruned gradients: GA keeps them
            self._hook_handles.append(layer.param.register_hook(self._grad_hook(layer.name)))
        self.apply_masks()

    def attach_optimizer(self, optimizer: torch.optim.Optimizer, weight_decay: float) -> None:
        """Add :meth:`extra_parameters` (weight decay ``weight_decay``) and the swap pre-hook."""
        if self._optimizer is not None:
            raise RuntimeError(f"{type(self).__name__}.attach_optimizer() was already called")
        extras = list(self.extra_parameters().values())
        if extras:
            optimizer.add_param_group({"params": extras, "weight_decay": float(weight_decay)})
        self._optimizer = optimizer
        self._opt_handle = optimizer.register_step_pre_hook(self._swap_in)

    def step(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """After ``optimizer.step()``: latent <- updated weights, then the base step."""
        if optimizer is not None and self.latent_active and optimizer is not self._optimizer:
            raise RuntimeError(
                f"{type(self).__name__}: call attach_optimizer(optimizer, weight_decay) before "
                "training (the optimizer must update the latent weights)"
            )
        if self._swapped:
            with torch.no_grad():
                for name, layer in self._layers.items():
                    self._latent[name].copy_(layer.param)
            self._swapped = False
        super().step(optimizer)

    def apply_masks(self) -> None:
        """While latent: ``P <- effective(W)`` and masks from its zeros; afterwards the base's."""
        if not self._latent:
            super().apply_masks()
            return
        with torch.no_grad():
            for name, layer in self._layers.items():
                layer.param.copy_(self.effective(name, self._latent[name]))
                self.after_refresh(layer)

    def after_refresh(self, layer: PrunedLayer) -> None:
        """Called after ``P`` was refreshed (default: nothing; AutoSparse sets the mask)."""

    def finish_latent(self, *, refresh: bool = True) -> None:
        """End GA: drop the latent weights, restore the base hooks, keep masks as they are.

        With ``refresh`` the model's weights are first set to ``effective(W)`` one last time
        (without: they are kept as they are, e.g. just loaded from a checkpoint).
        """
        if not self._latent:
            return
        if refresh:
            self.apply_masks()
        self._latent = {}
        for handle in self._hook_handles:
            handle.remove()
        self._hook_handles.clear()
        if self._opt_handle is not None:
            self._opt_handle.remove()
            self._opt_handle = None
        for layer in self._layers.values():
            layer.hooks.append(layer.param.register_hook(GradMask(layer.fmask)))
        for extra in self.extra_parameters().values():
            extra.requires_grad_(False)
        self.alpha = 0.0
        self._frozen = True
        super().apply_masks()

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The base state plus the latent weights, the extra tensors and ``alpha``."""
        state = super().state_dict()
        state["latent"] = {
            "alpha": self.alpha,
            "weights": {n: w.detach().cpu().clone() for n, w in self._latent.items()},
            "extra": {n: p.detach().cpu().clone() for n, p in self.extra_parameters().items()},
        }
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (latent weights first, then the base state)."""
        self._require_prepared()
        latent = state.get("latent")
        if not isinstance(latent, dict):
            raise UserError(
                f"sparsifier state lacks the latent weights of --method {self.config.method.value}"
            )
        weights: dict[str, Tensor] = latent["weights"]
        with torch.no_grad():
            for name, param in self.extra_parameters().items():
                if name not in latent["extra"]:
                    raise UserError(f"sparsifier state lacks {name}")
                param.copy_(latent["extra"][name])
            if weights:
                for name, w in weights.items():
                    if name not in self._latent or self._latent[name].shape != w.shape:
                        raise UserError(f"sparsifier state latent weight {name} does not fit")
                    self._latent[name].copy_(w)
        self.alpha = float(latent["alpha"])
        if not weights:
            self.finish_latent(refresh=False)  # saved after GA ended: the model holds the weights
        super().load_state_dict(state)

    # ------------------------------------------------------------------ internals
    def _grad_hook(self, name: str) -> Any:
        def hook(grad: Tensor) -> Tensor:
            if name not in self._latent:
                return grad
            extras = list(self.extra_parameters().values())
            with torch.enable_grad():
                w = self._latent[name].detach().requires_grad_(True)
                out = self.effective(name, w)
                inputs = [w] + [p for p in extras if p.requires_grad]
                grads = torch.autograd.grad(out, inputs, grad_outputs=grad, allow_unused=True)
            for p, g in zip(inputs[1:], grads[1:], strict=True):
                if g is not None:
                    p.grad = g if p.grad is None else p.grad + g
            assert grads[0] is not None
            return grads[0]

        return hook

    def _swap_in(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        """Optimizer step pre-hook: the parameters hold the latent weights during the step."""
        if not self._latent:
            return
        with torch.no_grad():
            for name, layer in self._layers.items():
                layer.param.copy_(self._latent[name])
        self._swapped = True

    def _mask_optimizer_state(self, optimizer: torch.optim.Optimizer) -> None:
        if not self._latent:  # while GA runs, the momentum of masked latent weights is kept
            super()._mask_optimizer_state(optimizer)
