"""Distillation losses: word-level KD (Hinton et al., 2015; Kim & Rush, 2016)
and sequence-level KD's cross-entropy on the teacher's text (Kim & Rush, 2016).

    loss = kd_loss(student_logits, teacher_logits, temperature)   # [B, T, V] each
    loss = text_loss(student_logits, tokens, n_prompt)            # [B, S, V], [B, S]

T^2 * KL(p_teacher || p_student) with both distributions softened by the
temperature, averaged over token positions: the T^2 keeps gradient sizes
comparable across temperatures. Teacher logits of -inf (tokens a
--kl-divergence-base file clamped, kld_base.py) have probability 0 and add
nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    V = student_logits.shape[-1]
    s = F.log_softmax(student_logits.reshape(-1, V).float() / temperature, dim=-1)  # [N, V]
    t = F.log_softmax(teacher_logits.reshape(-1, V).float() / temperature, dim=-1)  # [N, V]
    diff = torch.where(torch.isfinite(t), t - s, torch.zeros_like(s))  # 0 * -inf would be nan
    kl = (t.exp() * diff).sum(-1)  # [N]
    return kl.mean() * temperature**2


def text_loss(student_logits: torch.Tensor, tokens: torch.Tensor, n_prompt: int) -> torch.Tensor:
    """Mean cross-entropy of the tokens after the prompt (the teacher's), each
    predicted from the positions before it: logits [B, S, V] of tokens [B, S]."""
    V = student_logits.shape[-1]
    pred = student_logits[:, n_prompt - 1 : -1].reshape(-1, V).float()  # [B*(S-P), V]
    return F.cross_entropy(pred, tokens[:, n_prompt:].reshape(-1))
