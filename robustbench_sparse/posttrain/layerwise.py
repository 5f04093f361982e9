"""Layer-wise calibration: fit each pruned layer's output to the dense layer's, masks fixed.

Lazarevich et al. 2021 (arXiv 2104.15023); reference: OpenVINO POT
``algorithms/sparsity/layerwise_finetuning/algorithm.py`` and ``algorithms/finetuning/algorithm.py``
(``LayerwiseModelFinetuning._fine_tuning_step``). Each layer gets the *dense* model's input to that
layer (POT's "FP inputs") and is fitted to the dense layer's output on it with Adam (weights lr
1e-5, bias lr 1e-4), loss = MSE normalised by its value before tuning. Gradients at pruned
positions are zeroed and the weights re-masked after every step, so the mask never changes.

Because every layer sees dense inputs the layers are independent; POT averages their normalised
losses into one objective, here each is fitted on its own (the same minimiser; with Adam the
1/L scale of the average does not change the steps). POT's ``calculate_grads_on_loss_increase_only``
quirk is not reproduced. Tensors: inputs ``(N, *in)``, outputs ``(N, *out)`` of one module.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["LayerFit", "capture_io", "fit_layer", "output_error"]


@torch.no_grad()
def capture_io(
    model: nn.Module, module_name: str, images: Tensor, batch_size: int = 100
) -> tuple[Tensor, Tensor]:
    """The input and output of ``model``'s module ``module_name`` on ``images``.

    Args:
        model: in eval mode; its forward takes ``images`` (``(N, C, H, W)`` in ``[0, 1]``).
        module_name: a name from ``model.named_modules()`` whose forward takes one tensor.
        images: ``(N, C, H, W)``.
        batch_size: images per forward.

    Returns:
        ``(inputs, outputs)``: ``(N, *in)`` and ``(N, *out)`` on ``images``' device.
    """
    module = dict(model.named_modules())[module_name]
    ins: list[Tensor] = []
    outs: list[Tensor] = []

    def hook(_m: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> None:
        ins.append(args[0].detach())
        outs.append(out.detach())

    handle = module.register_forward_hook(hook)
    try:
        for start in range(0, images.shape[0], batch_size):
            model(images[start : start + batch_size])
    finally:
        handle.remove()
    return torch.cat(ins), torch.cat(outs)


@torch.no_grad()
def output_error(
    module: nn.Module, inputs: Tensor, targets: Tensor, batch_size: int = 256
) -> float:
    """Mean squared error between ``module(inputs)`` and ``targets`` (``(N, *out)``), float64."""
    total, count = 0.0, 0
    for start in range(0, inputs.shape[0], batch_size):
        out = module(inputs[start : start + batch_size])
        diff = (out - targets[start : start + batch_size]).double()
        total += float((diff * diff).sum())
        count += diff.numel()
    return total / max(count, 1)


@dataclass(frozen=True)
class LayerFit:
    """Settings of :func:`fit_layer` (POT's defaults: 30 iterations of 2,000 samples in batches of
    50, weights lr 1e-5, bias lr 1e-4)."""

    iterations: int = 30
    samples_per_iteration: int = 2000
    batch_size: int = 50
    lr: float = 1e-5
    bias_lr: float = 1e-4

    @property
    def steps(self) -> int:
        """Adam steps in all: ``iterations * ceil(samples_per_iteration / batch_size)``."""
        return self.iterations * -(-self.samples_per_iteration // self.batch_size)


def fit_layer(
    module: nn.Conv2d | nn.Linear,
    mask: Tensor,
    inputs: Tensor,
    targets: Tensor,
    fit: LayerFit,
    generator: torch.Generator,
) -> None:
    """Fit ``module`` (in place) so ``module(inputs) ~ targets``; its weight stays zero off ``mask``.

    Args:
        module: the pruned layer (weight ``(K, ...)``, optional bias ``(K,)``).
        mask: bool keep-mask of ``module.weight``'s shape; never changed.
        inputs: ``(N, *in)`` the dense model's inputs to this layer.
        targets: ``(N, *out)`` the dense layer's outputs on them.
        fit: steps, batch size, learning rates.
        generator: CPU generator drawing the batches (seeded by the caller).
    """
    mask_b = mask.to(module.weight.device, torch.bool)
    keep = mask_b.to(module.weight.dtype)
    groups: list[dict[str, object]] = [{"params": [module.weight], "lr": fit.lr}]
    if module.bias is not None:
        groups.append({"params": [module.bias], "lr": fit.bias_lr})
    optimizer = torch.optim.Adam(groups)  # type: ignore[arg-type]
    scale = max(output_error(module, inputs, targets), 1e-30)  # POT: loss / its initial value
    n = inputs.shape[0]
    was_training = module.training
    module.train(False)
    for _ in range(fit.steps):
        idx = torch.randint(n, (min(fit.batch_size, n),), generator=generator).to(inputs.device)
        out = module(inputs[idx])
        loss = nn.functional.mse_loss(out, targets[idx]) / scale
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        assert module.weight.grad is not None
        module.weight.grad.mul_(keep)
        optimizer.step()
        with torch.no_grad():
            module.weight.masked_fill_(~mask_b, 0.0)  # +0.0 at pruned positions
    module.train(was_training)
    for p in module.parameters():
        p.grad = None
