"""Word-level knowledge distillation loss (Hinton et al., 2015; Kim & Rush, 2016).

    loss = kd_loss(student_logits, teacher_logits, temperature)   # [B, T, V] each

T^2 * KL(p_teacher || p_student) with both distributions softened by the
temperature, averaged over token positions: the T^2 keeps gradient sizes
comparable across temperatures.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    V = student_logits.shape[-1]
    s = F.log_softmax(student_logits.reshape(-1, V).float() / temperature, dim=-1)  # [N, V]
    t = F.log_softmax(teacher_logits.reshape(-1, V).float() / temperature, dim=-1)  # [N, V]
    kl = (t.exp() * (t - s)).sum(-1)  # [N]
    return kl.mean() * temperature**2
