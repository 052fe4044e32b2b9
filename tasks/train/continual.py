"""The loss terms of continual learning, shared by both detector families.

* **distillation** — ``T^2 * KL(Bernoulli(sigmoid(t/T)) || Bernoulli(sigmoid(s/T)))`` between the
  champion's binary logit ``t`` and the student's ``s`` (Hinton's form: the constant ``T^2`` outside the
  KL, so the logged loss is the KL itself scaled, not shifted);
* **EWC** — ``sum_i F_i (theta_i - theta*_i)^2`` over the *trainable* parameters (the LoRA adapter
  when the VLM is LoRA-tuned, the head for the probe), with the champion's weights ``theta*`` and a
  diagonal empirical Fisher ``F`` estimated on seen images. The caller weighs it by ``lambda / 2``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(teacher_T || student_T)`` for binary logits (mean over rows); zero when they are equal."""
    from torch.nn import functional as F

    if not len(student):
        return student.sum() * 0.0
    t = F.logsigmoid(teacher / temperature).exp()
    log_s_fake, log_s_real = F.logsigmoid(student / temperature), F.logsigmoid(-student / temperature)
    log_t_fake, log_t_real = F.logsigmoid(teacher / temperature), F.logsigmoid(-teacher / temperature)
    kl = t * (log_t_fake - log_s_fake) + (1 - t) * (log_t_real - log_s_real)
    return temperature**2 * kl.mean()


def trainable(module: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in module.named_parameters() if p.requires_grad}


def anchor_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the trainable parameters now (the champion's, before training moves them)."""
    return {name: p.detach().clone() for name, p in trainable(module).items()}


def ewc_penalty(
    module: torch.nn.Module, anchor: dict[str, torch.Tensor], fisher: dict[str, torch.Tensor]
) -> torch.Tensor:
    """``sum_i F_i (theta_i - theta*_i)^2``: zero at the anchor, positive away from it."""
    import torch

    total = torch.zeros((), device=next(iter(anchor.values())).device) if anchor else torch.zeros(())
    for name, p in trainable(module).items():
        if name in fisher:
            total = total + (fisher[name] * (p - anchor[name]) ** 2).sum()
    return total


def diagonal_fisher(
    module: torch.nn.Module, sample_loss: Callable[[int], torch.Tensor], count: int
) -> dict[str, torch.Tensor]:
    """Empirical diagonal Fisher: the mean squared gradient of ``sample_loss(i)`` (the binary
    log-likelihood of sample ``i``) over ``count`` samples, for every trainable parameter."""
    import torch

    params = trainable(module)
    fisher = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in params.items()}
    was_training = module.training
    module.eval()  # no dropout: the Fisher of the model as it predicts
    try:
        for i in range(count):
            module.zero_grad(set_to_none=True)
            sample_loss(i).backward()
            for name, p in params.items():
                if p.grad is not None:
                    fisher[name] += p.grad.detach().float() ** 2
    finally:
        module.zero_grad(set_to_none=True)
        module.train(was_training)
    return {name: f / max(count, 1) for name, f in fisher.items()}
