"""The sparsifier base every pruning method subclasses, shaped like ``torch.ao.pruning``.

Lifecycle (what :func:`~robustbench_sparse.training.fit` does)::

    sparsifier = create_sparsifier(config, steps_per_epoch)  # a Sparsifier subclass
    sparsifier.prepare(model)                # select layers, all-True masks, gradient hooks
    sparsifier.attach_optimizer(optimizer, weight_decay)  # its own trainable tensors (AutoSparse)
    sparsifier.on_train_start(context)       # masks from data at init (GraSP)
    for epoch in ...:
        for x, y in batches:
            sparsifier.on_batch_start(context)   # masks learned when due (HYDRA)
            loss.backward(); optimizer.step()
            sparsifier.step(optimizer)       # t += 1, update masks if due, re-apply, zero state
        sparsifier.on_epoch_end(epoch)
    sparsifier.on_train_end(epochs)          # freeze (squash) an unfinished schedule

Hooks a method implements (each has a no-op default here): :meth:`Sparsifier.select_layers`,
:meth:`~Sparsifier.channel_params`, :meth:`~Sparsifier.mask_update_due`,
:meth:`~Sparsifier.sparsity_at`, :meth:`~Sparsifier.update_mask`,
:meth:`~Sparsifier.on_train_start`, :meth:`~Sparsifier.on_batch_start`,
:meth:`~Sparsifier.on_epoch_end`, :meth:`~Sparsifier.on_train_end`. The base owns everything
the methods share: one :class:`PrunedLayer` record per pruned weight, gradient hooks, re-applying
masks after every optimizer step, zeroing optimizer state at pruned positions, the step counter,
freezing and :meth:`~Sparsifier.state_dict` / :meth:`~Sparsifier.load_state_dict`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from robustbench_sparse.errors import UserError
from robustbench_sparse.sparsity.config import SparsityConfig
from robustbench_sparse.sparsity.report import SparsityReport, sparsity_report
from robustbench_sparse.sparsity.schedule import epochs_to_steps
from robustbench_sparse.sparsity.selection import select_layers

logger = logging.getLogger(__name__)

__all__ = ["Batch", "LossFn", "PrunedLayer", "Sparsifier", "TrainingContext"]

STATE_VERSION = 1

Batch = tuple[Tensor, Tensor]
#: (module, x, y) -> scalar training loss of ``module`` on the batch.
LossFn = Callable[[nn.Module, Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class TrainingContext:
    """What the training loop offers the hooks that need data or the loss (GraSP, HYDRA)."""

    model: nn.Module  # the prepared model (unwrapped: parameter names without "module.")
    # batches(seed): seeded, shuffled training batches (x (N, ...), y (N,)) on the training
    # device; not sharded, so every rank sees the same ones.
    batches: Callable[[int], Iterable[Batch]]
    loss: LossFn  # the run's training loss (adversarial at the full budget when it trains so)
    seed: int  # the run's seed


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


class GradMask:
    """Gradient hook: zero the gradient at pruned positions (picklable, unlike a lambda)."""

    def __init__(self, fmask: Tensor) -> None:
        self.fmask = fmask

    def __call__(self, grad: Tensor) -> Tensor:
        """``grad`` with the pruned positions zeroed."""
        return grad * self.fmask


@dataclass(eq=False)
class PrunedLayer:
    """The mask state of one pruned weight; every tensor is updated in place.

    ``mask`` is the boolean keep-mask (same shape as ``param``); ``fmask`` the same mask in the
    weight's dtype (gradient hook, optimizer state); ``pruned`` its complement and ``keep_bits``
    an integer mask with all bits set where kept (re-application). ``channel_params`` are
    parameters indexed by the layer's output channel that are pruned with it (filter pruning:
    the conv bias and the BatchNorm affine parameters), each with its float ``(K,)`` mask: a
    channel whose weights are all pruned has them at 0 too.
    """

    name: str  # parameter name, e.g. "net.conv2.weight"
    param: nn.Parameter
    mask: Tensor
    fmask: Tensor
    pruned: Tensor
    keep_bits: Tensor
    channel_params: list[tuple[Tensor, Tensor]] = field(default_factory=list)
    hooks: list[RemovableHandle] = field(default_factory=list)

    @classmethod
    def create(
        cls, name: str, param: nn.Parameter, channel_params: Iterable[Tensor] = ()
    ) -> PrunedLayer:
        """A dense (all-True) record of ``param`` with gradient hooks registered."""
        mask = torch.ones_like(param, dtype=torch.bool)
        fmask = torch.ones_like(param)
        layer = cls(name, param, mask, fmask, ~mask, _keep_bits(mask, param))
        layer.hooks.append(param.register_hook(GradMask(fmask)))
        for extra in channel_params:
            extra_mask = torch.ones_like(extra)
            layer.channel_params.append((extra, extra_mask))
            layer.hooks.append(extra.register_hook(GradMask(extra_mask)))
        return layer

    @property
    def module_name(self) -> str:
        """Qualified name of the module holding the weight (``"net.conv2"``)."""
        return self.name.rsplit(".", 1)[0]

    def set_mask(self, mask: Tensor) -> None:
        """Install ``mask`` (bool, same shape) in place, so the gradient hooks see it."""
        self.mask.copy_(mask)
        self.fmask.copy_(self.mask)
        torch.logical_not(self.mask, out=self.pruned)
        self.keep_bits.copy_(_keep_bits(self.mask, self.param))
        if self.channel_params:
            alive = self.mask.reshape(mask.shape[0], -1).any(dim=1)  # (K,)
            for _, channel_mask in self.channel_params:
                channel_mask.copy_(alive)

    def apply(self) -> None:
        """Zero the pruned weights in place (+0.0) and the channel parameters of dead channels."""
        with torch.no_grad():
            # Bitwise AND of the weight's bits with the keep-mask's bits: a pruned position
            # becomes +0.0 exactly, even after inf/NaN (mul_ would give inf * 0 = NaN, and
            # -0.0 for negative weights; the packed export relies on bit-identical zeros),
            # kept weights are untouched, and it is ~6x cheaper than masked_fill_ on CPU.
            bits = _int_view(self.param)
            if bits is not None:
                bits.bitwise_and_(self.keep_bits)
            else:
                self.param.masked_fill_(self.pruned, 0.0)

    def apply_channels(self) -> None:
        """Multiply the channel parameters by their masks."""
        with torch.no_grad():
            for param, channel_mask in self.channel_params:
                param.mul_(channel_mask)

    def mask_optimizer_state(self, optimizer: torch.optim.Optimizer) -> None:
        """Zero optimizer state shaped like the weight at pruned positions (momentum, moments)."""
        with torch.no_grad():
            _mask_state(optimizer, self.param, self.fmask)

    def mask_channel_state(self, optimizer: torch.optim.Optimizer) -> None:
        """As :meth:`mask_optimizer_state`, for the channel parameters."""
        with torch.no_grad():
            for param, channel_mask in self.channel_params:
                _mask_state(optimizer, param, channel_mask)

    def remove_hooks(self) -> None:
        """Remove the gradient hooks of the weight and of the channel parameters."""
        for handle in self.hooks:
            handle.remove()
        self.hooks.clear()


def _mask_state(optimizer: torch.optim.Optimizer, param: Tensor, fmask: Tensor) -> None:
    for value in (optimizer.state.get(param) or {}).values():
        if isinstance(value, Tensor) and value.shape == param.shape:
            value.mul_(fmask)


class Sparsifier:
    """Keeps the selected weights of a model pruned; subclasses decide which masks and when.

    The step counter ``t`` counts optimizer steps; ``start_step`` / ``end_step`` are the
    config's ``start`` / ``end`` epochs in steps. When :meth:`mask_update_due` says so (and the
    masks are not frozen), :meth:`step` recomputes every layer's mask with :meth:`update_mask` at
    the sparsity :meth:`sparsity_at` gives; from ``end_step`` on the masks are frozen. After
    every :meth:`step`, weights are multiplied by their masks and optimizer state tensors shaped
    like the weight (SGD ``momentum_buffer``, Adam ``exp_avg``/``exp_avg_sq``/``max_exp_avg_sq``)
    are zeroed at pruned positions; gradient hooks zero the gradients of pruned positions, so
    neither momentum nor weight decay revives a weight.
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
        self._layers: dict[str, PrunedLayer] = {}
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
    def layers(self) -> Mapping[str, PrunedLayer]:
        """The record of every pruned weight, keyed by parameter name, in registration order."""
        return dict(self._layers)

    @property
    def weights(self) -> dict[str, nn.Parameter]:
        """The pruned weights, keyed by parameter name, in registration order."""
        return {name: layer.param for name, layer in self._layers.items()}

    @property
    def masks(self) -> dict[str, Tensor]:
        """Copies of the boolean keep-masks, keyed by parameter name (``"net.conv2.weight"``)."""
        return {name: layer.mask.clone() for name, layer in self._layers.items()}

    @property
    def pruned_names(self) -> list[str]:
        """Parameter names of the pruned layers, in registration order."""
        return list(self._layers)

    # ------------------------------------------------------------------ hooks
    def select_layers(self, model: nn.Module) -> list[str]:
        """Parameter names this sparsifier prunes (default: the config's layer selection)."""
        return select_layers(model, self.config)

    def channel_params(self, model: nn.Module, name: str) -> list[Tensor]:
        """Parameters pruned per output channel together with weight ``name`` (default: none)."""
        return []

    def mask_update_due(self, step: int) -> bool:
        """Whether :meth:`step` recomputes the masks at optimizer step ``step`` (default: never)."""
        return False

    def sparsity_at(self, step: int) -> float:
        """Target sparsity of a mask update at optimizer step ``step`` (default: the target)."""
        return self.config.target

    def update_mask(self, layer: PrunedLayer, sparsity: float) -> Tensor:
        """The new keep-mask of ``layer`` at ``sparsity`` (default: its current mask, unchanged)."""
        return layer.mask

    def attach_optimizer(self, optimizer: torch.optim.Optimizer, weight_decay: float) -> None:
        """Called once, right after the run's optimizer is built (before any resume).

        A sparsifier that owns trainable tensors adds them here (``add_param_group``, with
        ``weight_decay`` or its own) and may register optimizer step hooks. Default: nothing.
        """

    def on_train_start(self, context: TrainingContext) -> bool:
        """Called once before the first training step (after a resume). Default: nothing.

        Returns True when the masks were set from data here; the caller then makes every rank
        use rank 0's masks.
        """
        return False

    def on_batch_start(self, context: TrainingContext) -> bool:
        """Called before every training step. Returns True when the masks changed (default: no)."""
        return False

    def on_epoch_end(self, epoch: int) -> None:
        """Called after every training epoch (0-based ``epoch``). Default: nothing."""

    def label_smoothing(self, num_classes: int, requested: float) -> float:
        """The label smoothing (torch's ``label_smoothing`` convention) the run's losses use,
        given the dataset's class count and the configured value. Default: ``requested``."""
        return requested

    def on_train_end(self, epochs: int) -> None:
        """Called after the last of ``epochs`` epochs: freeze masks still able to change."""
        if self._frozen:
            return
        logger.warning(
            "training ended before the pruning schedule finished (end epoch %.2f > %d epochs); "
            "freezing masks at sparsity %.3f",
            self.config.end,
            epochs,
            self._sparsity,
        )
        self.freeze()

    # ------------------------------------------------------------------ lifecycle
    def prepare(self, model: nn.Module) -> None:
        """Select the layers, create all-True masks and register gradient hooks on them."""
        if self._model is not None:
            raise RuntimeError(f"{type(self).__name__}.prepare() was already called")
        self._model = model
        params = dict(model.named_parameters())
        for name in self.select_layers(model):
            self._layers[name] = PrunedLayer.create(
                name, params[name], self.channel_params(model, name)
            )
        logger.debug(
            "%s: pruning %d layers to %.4f (%s), steps %d..%d every %d",
            self.config.method.value,
            len(self._layers),
            self.config.target,
            self.config.granularity.value,
            self.start_step,
            self.end_step,
            self.config.update_every,
        )
        self._update_if_due()

    def step(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Call after every ``optimizer.step()``: advance ``t``, update masks if due, re-apply them."""
        self._require_prepared()
        self._step += 1
        if not self._layers:
            return
        self._update_if_due()
        self.apply_masks()
        if optimizer is not None:
            self._mask_optimizer_state(optimizer)

    def apply_masks(self) -> None:
        """Zero every pruned weight in place (+0.0), and the channel parameters of dead channels."""
        for layer in self._layers.values():
            layer.apply()
        for layer in self._layers.values():
            layer.apply_channels()

    def freeze(self) -> None:
        """Fix the current masks for the rest of training (``squash_mask`` keeps the hooks)."""
        self._frozen = True

    def remove_hooks(self) -> None:
        """Remove the gradient hooks (masks are still applied by :meth:`step`)."""
        for layer in self._layers.values():
            layer.remove_hooks()

    def report(self) -> SparsityReport:
        """Per-layer report computed from the model's actual zeros."""
        model = self._require_prepared()
        return sparsity_report(model, self.config, self.pruned_names)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: step counter, frozen flag, masks (CPU bool tensors)."""
        return {
            "version": STATE_VERSION,
            "step": self._step,
            "frozen": self._frozen,
            "sparsity": self._sparsity,
            "steps_per_epoch": self.steps_per_epoch,
            "config": self.config.to_dict(),
            "masks": {n: layer.mask.detach().cpu().clone() for n, layer in self._layers.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` into a prepared sparsifier and re-apply the masks."""
        self._require_prepared()
        if state.get("version") != STATE_VERSION:
            raise UserError(f"unsupported sparsifier state version {state.get('version')!r}")
        masks: dict[str, Tensor] = state["masks"]
        if set(masks) != set(self._layers):
            raise UserError(
                "sparsifier state does not match the model: state prunes "
                f"{sorted(masks)}, this model/config prunes {sorted(self._layers)}"
            )
        for name, mask in masks.items():
            if tuple(mask.shape) != tuple(self._layers[name].mask.shape):
                raise UserError(
                    f"sparsifier state mask {name} has shape {tuple(mask.shape)}, "
                    f"the model's weight has {tuple(self._layers[name].mask.shape)}"
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
            self._layers[name].set_mask(mask.to(dtype=torch.bool))
        self._step = int(state["step"])
        self._frozen = bool(state["frozen"])
        self._sparsity = float(state["sparsity"])
        self._updates += 1
        self.apply_masks()

    # ------------------------------------------------------------------ internals
    def _require_prepared(self) -> nn.Module:
        if self._model is None:
            raise RuntimeError(f"call {type(self).__name__}.prepare(model) first")
        return self._model

    def _update_if_due(self) -> None:
        t = self._step
        if self._frozen or not self.mask_update_due(t):
            return
        sparsity = self.sparsity_at(t)
        if sparsity > 0.0:
            for layer in self._layers.values():
                layer.set_mask(self.update_mask(layer, sparsity))
            self._sparsity = sparsity
            self._updates += 1
        if t >= self.end_step:
            self._frozen = True
        logger.debug(
            "%s step %d: masks at sparsity %.4f%s",
            self.config.method.value,
            t,
            sparsity,
            " (frozen)" if self._frozen else "",
        )
        self.apply_masks()

    def _install(self, masks: dict[str, Tensor], sparsity: float) -> None:
        """Set every listed layer's mask at once, freeze, and zero the pruned weights."""
        for name, mask in masks.items():
            self._layers[name].set_mask(mask)
        self._sparsity = sparsity
        self._updates += 1
        self._frozen = True
        self.apply_masks()

    def _mask_optimizer_state(self, optimizer: torch.optim.Optimizer) -> None:
        for layer in self._layers.values():
            layer.mask_optimizer_state(optimizer)
        for layer in self._layers.values():
            layer.mask_channel_state(optimizer)
