"""Campfire: gradual magnitude pruning to a structured pattern, frozen after the end step.

Usage (shaped like ``torch.ao.pruning``)::

    sparsifier = CampfireSparsifier(config, steps_per_epoch=len(train_loader))
    sparsifier.prepare(model)
    for x, y in batches:
        loss = criterion(model(x), y)
        optimizer.zero_grad(); loss.backward(); optimizer.step()
        sparsifier.step(optimizer)      # after every optimizer step
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from robustbench_sparse.errors import UserError
from robustbench_sparse.sparsity.config import SparsityConfig
from robustbench_sparse.sparsity.masks import compute_mask
from robustbench_sparse.sparsity.report import SparsityReport, sparsity_report
from robustbench_sparse.sparsity.schedule import cubic_sparsity, epochs_to_steps
from robustbench_sparse.sparsity.selection import select_layers

logger = logging.getLogger(__name__)

_STATE_VERSION = 1


class CampfireSparsifier:
    """Prunes the selected layers of a model along the cubic schedule and keeps them pruned.

    The step counter ``t`` counts optimizer steps. With ``t0 = epochs_to_steps(start)`` and
    ``t1 = epochs_to_steps(end)``, masks are recomputed at every ``t`` in ``[t0, t1]`` with
    ``(t - t0) % update_every == 0`` and always at ``t == t1``; after ``t1`` they are frozen.
    (``t = 0`` is handled by :meth:`prepare`, so ``start = end = 0`` prunes once, up front.)
    Masks are monotone: a pruned weight never returns.

    After every :meth:`step`, weights are multiplied by their masks and optimizer state tensors
    shaped like the weight (SGD ``momentum_buffer``, Adam ``exp_avg``/``exp_avg_sq``/
    ``max_exp_avg_sq``) are zeroed at pruned positions; gradient hooks zero the gradients of
    pruned positions, so neither momentum nor weight decay revives a weight.
    """

    def __init__(self, config: SparsityConfig, steps_per_epoch: int) -> None:
        if isinstance(steps_per_epoch, bool) or not isinstance(steps_per_epoch, int):
            raise UserError(f"steps_per_epoch must be an integer, got {steps_per_epoch!r}")
        if steps_per_epoch < 1:
            raise UserError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
        self.config = config
        self.steps_per_epoch = steps_per_epoch
        self.start_step = epochs_to_steps(config.start, steps_per_epoch)
        self.end_step = epochs_to_steps(config.end, steps_per_epoch)
        self._model: nn.Module | None = None
        self._params: dict[str, nn.Parameter] = {}
        self._masks: dict[str, Tensor] = {}  # bool, same shape as the weight
        self._fmasks: dict[str, Tensor] = {}  # the same masks in the weight's dtype (grad hooks)
        self._pruned: dict[str, Tensor] = {}  # ~mask (fallback re-application)
        self._keep_bits: dict[str, Tensor] = {}  # all-ones bits where kept, 0 where pruned
        self._hooks: list[RemovableHandle] = []
        self._step = 0
        self._frozen = config.dense
        self._sparsity = 0.0
        self._updates = 0

    # ------------------------------------------------------------------ properties
    @property
    def update_count(self) -> int:
        """How many times the masks were (re)computed or loaded by this object.

        Callers that must keep masks in sync (DDP ranks) verify them whenever this changes.
        """
        return self._updates

    @property
    def step_count(self) -> int:
        """Optimizer steps seen so far (``t``)."""
        return self._step

    @property
    def current_sparsity(self) -> float:
        """Target sparsity the current masks were computed for (0 before the first update)."""
        return self._sparsity

    @property
    def frozen(self) -> bool:
        """True once masks can no longer change (after ``end``, after :meth:`freeze`, or dense)."""
        return self._frozen

    @property
    def masks(self) -> dict[str, Tensor]:
        """Copies of the boolean keep-masks, keyed by parameter name (``"net.conv2.weight"``)."""
        return {name: mask.clone() for name, mask in self._masks.items()}

    @property
    def pruned_names(self) -> list[str]:
        """Parameter names of the pruned layers, in registration order."""
        return list(self._masks)

    def sparsity_at(self, step: int) -> float:
        """Scheduled target sparsity at optimizer step ``step`` (pure; no side effects)."""
        return cubic_sparsity(
            step,
            initial=self.config.initial,
            final=self.config.target,
            start_step=self.start_step,
            end_step=self.end_step,
        )

    # ------------------------------------------------------------------ lifecycle
    def prepare(self, model: nn.Module) -> None:
        """Select the layers, create all-True masks and register gradient hooks on them."""
        if self._model is not None:
            raise RuntimeError("CampfireSparsifier.prepare() was already called")
        self._model = model
        params = dict(model.named_parameters())
        for name in self._select_layers(model):
            param = params[name]
            mask = torch.ones_like(param, dtype=torch.bool)
            fmask = torch.ones_like(param)
            self._params[name] = param
            self._masks[name] = mask
            self._fmasks[name] = fmask
            self._pruned[name] = ~mask
            self._keep_bits[name] = _keep_bits(mask, param)
            self._hooks.append(param.register_hook(_GradMask(fmask)))
        logger.debug(
            "campfire: pruning %d layers to %.4f (%s), steps %d..%d every %d",
            len(self._masks),
            self.config.target,
            self.config.granularity.value,
            self.start_step,
            self.end_step,
            self.config.update_every,
        )
        self._maybe_update()

    def step(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Call after every ``optimizer.step()``: advance ``t``, update masks if due, re-apply them."""
        self._require_prepared()
        self._step += 1
        if not self._masks:
            return
        self._maybe_update()
        self.apply_masks()
        if optimizer is not None:
            self._mask_optimizer_state(optimizer)

    def apply_masks(self) -> None:
        """Zero every pruned weight in place (+0.0)."""
        with torch.no_grad():
            for name, param in self._params.items():
                # Bitwise AND of the weight's bits with the keep-mask's bits: a pruned position
                # becomes +0.0 exactly, even after inf/NaN (mul_ would give inf * 0 = NaN, and
                # -0.0 for negative weights; the packed export relies on bit-identical zeros),
                # kept weights are untouched, and it is ~6x cheaper than masked_fill_ on CPU.
                bits = _int_view(param)
                if bits is not None:
                    bits.bitwise_and_(self._keep_bits[name])
                else:
                    param.masked_fill_(self._pruned[name], 0.0)

    def freeze(self) -> None:
        """Fix the current masks for the rest of training."""
        self._frozen = True

    def remove_hooks(self) -> None:
        """Remove the gradient hooks (masks are still applied by :meth:`step`)."""
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()

    def report(self) -> SparsityReport:
        """Per-layer report computed from the model's actual zeros."""
        model = self._require_prepared()
        return sparsity_report(model, self.config, self.pruned_names)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: step counter, frozen flag, masks (CPU bool tensors)."""
        return {
            "version": _STATE_VERSION,
            "step": self._step,
            "frozen": self._frozen,
            "sparsity": self._sparsity,
            "steps_per_epoch": self.steps_per_epoch,
            "config": self.config.to_dict(),
            "masks": {name: mask.detach().cpu().clone() for name, mask in self._masks.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` into a prepared sparsifier and re-apply the masks."""
        self._require_prepared()
        if state.get("version") != _STATE_VERSION:
            raise UserError(f"unsupported sparsifier state version {state.get('version')!r}")
        masks: dict[str, Tensor] = state["masks"]
        if set(masks) != set(self._masks):
            raise UserError(
                "sparsifier state does not match the model: state prunes "
                f"{sorted(masks)}, this model/config prunes {sorted(self._masks)}"
            )
        for name, mask in masks.items():
            if tuple(mask.shape) != tuple(self._masks[name].shape):
                raise UserError(
                    f"sparsifier state mask {name} has shape {tuple(mask.shape)}, "
                    f"the model's weight has {tuple(self._masks[name].shape)}"
                )
        if state.get("config") != self.config.to_dict():
            logger.warning("resuming a sparsifier state saved with a different sparsity config")
        if state.get("steps_per_epoch") != self.steps_per_epoch:
            logger.warning(
                "resuming with steps_per_epoch=%d, state was saved with %s",
                self.steps_per_epoch,
                state.get("steps_per_epoch"),
            )
        for name, mask in masks.items():
            self._set_mask(name, mask.to(dtype=torch.bool))
        self._step = int(state["step"])
        self._frozen = bool(state["frozen"])
        self._sparsity = float(state["sparsity"])
        self._updates += 1
        self.apply_masks()

    # ------------------------------------------------------------------ internals
    def _select_layers(self, model: nn.Module) -> list[str]:
        """Parameter names this sparsifier prunes (subclasses may narrow the selection)."""
        return select_layers(model, self.config)

    def _compute_layer_mask(self, name: str, param: Tensor, sparsity: float) -> Tensor:
        """The new keep-mask of ``param`` at ``sparsity`` (monotone wrt the current mask)."""
        return compute_mask(param, sparsity, self.config.granularity, previous=self._masks[name])

    def _require_prepared(self) -> nn.Module:
        if self._model is None:
            raise RuntimeError("call CampfireSparsifier.prepare(model) first")
        return self._model

    def _due(self, t: int) -> bool:
        if self._frozen or t < self.start_step or t > self.end_step:
            return False
        return t == self.end_step or (t - self.start_step) % self.config.update_every == 0

    def _maybe_update(self) -> None:
        t = self._step
        if not self._due(t):
            return
        sparsity = self.sparsity_at(t)
        if sparsity > 0.0:
            for name, param in self._params.items():
                self._set_mask(name, self._compute_layer_mask(name, param, sparsity))
            self._sparsity = sparsity
            self._updates += 1
        if t >= self.end_step:
            self._frozen = True
        logger.debug(
            "campfire step %d: masks at sparsity %.4f%s",
            t,
            sparsity,
            " (frozen)" if self._frozen else "",
        )
        self.apply_masks()

    def _set_mask(self, name: str, mask: Tensor) -> None:
        # In place, so the gradient hooks (which hold the float mask) see the update.
        self._masks[name].copy_(mask)
        self._fmasks[name].copy_(self._masks[name])
        torch.logical_not(self._masks[name], out=self._pruned[name])
        self._keep_bits[name].copy_(_keep_bits(self._masks[name], self._params[name]))

    def _mask_optimizer_state(self, optimizer: torch.optim.Optimizer) -> None:
        with torch.no_grad():
            for name, param in self._params.items():
                state = optimizer.state.get(param)
                if not state:
                    continue
                for value in state.values():
                    if isinstance(value, Tensor) and value.shape == param.shape:
                        value.mul_(self._fmasks[name])


_INT_OF_FLOAT = {
    torch.float32: torch.int32,
    torch.float64: torch.int64,
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
}


def _int_view(param: Tensor) -> Tensor | None:
    """The weight's storage reinterpreted as integers of the same width (None if impossible)."""
    int_dtype = _INT_OF_FLOAT.get(param.dtype)
    if int_dtype is None or not param.is_contiguous():
        return None
    return param.detach().view(int_dtype)


def _keep_bits(mask: Tensor, param: Tensor) -> Tensor:
    """Integer mask with every bit set where ``mask`` keeps and 0 where it prunes (-1 = ~0)."""
    int_dtype = _INT_OF_FLOAT.get(param.dtype, torch.int32)
    return mask.to(int_dtype).neg_()


class _GradMask:
    """Gradient hook: zero the gradient at pruned positions (picklable, unlike a lambda)."""

    def __init__(self, fmask: Tensor) -> None:
        self.fmask = fmask

    def __call__(self, grad: Tensor) -> Tensor:
        return grad * self.fmask
