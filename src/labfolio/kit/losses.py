"""Losses: cross-entropy with label smoothing, and circle loss for the metric-learning variant.

Both compute in fp32 whatever the input dtype, so they behave the same under bf16 autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["smoothed_cross_entropy", "soft_cross_entropy", "circle_loss", "CircleLoss"]


def smoothed_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Mean cross-entropy against targets smoothed towards the uniform distribution.

    The target distribution is ``(1 - eps) * onehot + eps / C``, so the loss is
    ``(1 - eps) * nll + eps * mean_c(-log p_c)``.

    logits: (..., C) unnormalised scores; targets: (...) class indices in [0, C).
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    assert logits.shape[:-1] == targets.shape, (
        f"logits {tuple(logits.shape)} need one more (class) axis than targets {tuple(targets.shape)}"
    )
    log_probs = F.log_softmax(logits.float(), dim=-1).reshape(-1, logits.shape[-1])  # (N, C)
    flat_targets = targets.reshape(-1)  # (N,)
    nll = -log_probs.gather(1, flat_targets[:, None]).squeeze(1)  # (N,)
    if label_smoothing == 0.0:
        return nll.mean()
    uniform = -log_probs.mean(dim=1)  # (N,)
    return ((1.0 - label_smoothing) * nll + label_smoothing * uniform).mean()


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy against target distributions (MixUp/CutMix targets, already smoothed).

    logits: (N, C) unnormalised scores; targets: (N, C) rows that sum to 1.
    """
    assert logits.shape == targets.shape, (
        f"logits {tuple(logits.shape)} and soft targets {tuple(targets.shape)} must have the same shape"
    )
    return -(targets * F.log_softmax(logits.float(), dim=-1)).sum(dim=-1).mean()


def circle_loss(
    embeddings: torch.Tensor, labels: torch.Tensor, margin: float = 0.25, gamma: float = 256.0
) -> torch.Tensor:
    """Circle loss (Sun et al. 2020, eq. 6) over all pairs in a batch, averaged over anchors.

    For each anchor, with cosine similarities s_p to its positives and s_n to its negatives::

        L = softplus( logsumexp_n(gamma * a_n * (s_n - m)) + logsumexp_p(-gamma * a_p * (s_p - 1 + m)) )
        a_p = relu(1 + m - s_p),  a_n = relu(s_n + m)

    The weights a_p, a_n are treated as constants (no gradient through them), as in the paper, so
    each similarity is pushed with a strength proportional to how far it is from its optimum.
    Anchors without a positive or a negative in the batch are skipped.

    embeddings: (B, D); labels: (B,) integer class ids.
    """
    assert embeddings.ndim == 2, f"embeddings must be (B, D), got {tuple(embeddings.shape)}"
    assert labels.shape == embeddings.shape[:1], (
        f"labels {tuple(labels.shape)} must be (B,) for embeddings {tuple(embeddings.shape)}"
    )
    if not 0.0 <= margin < 1.0:
        raise ValueError(f"margin must be in [0, 1), got {margin}")
    normed = F.normalize(embeddings.float(), dim=1)
    similarity = normed @ normed.T  # (B, B) cosine similarities
    same = labels[:, None] == labels[None, :]  # (B, B)
    not_self = ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    positive = same & not_self
    negative = ~same

    alpha_p = torch.relu(1.0 + margin - similarity.detach())
    alpha_n = torch.relu(similarity.detach() + margin)
    logit_p = -gamma * alpha_p * (similarity - (1.0 - margin))
    logit_n = gamma * alpha_n * (similarity - margin)
    # masked pairs get -inf so they drop out of the logsumexp
    neg_inf = torch.finfo(similarity.dtype).min
    lse_p = torch.logsumexp(logit_p.masked_fill(~positive, neg_inf), dim=1)  # (B,)
    lse_n = torch.logsumexp(logit_n.masked_fill(~negative, neg_inf), dim=1)  # (B,)
    valid = positive.any(dim=1) & negative.any(dim=1)
    if not bool(valid.any()):
        raise ValueError(
            "circle loss needs at least one anchor with both a positive and a negative in the batch; "
            "use batches with >= 2 examples of some class and >= 2 classes"
        )
    per_anchor = F.softplus(lse_p + lse_n)  # (B,)
    return per_anchor[valid].mean()


class CircleLoss(nn.Module):
    """Module form of `circle_loss` with its margin and scale fixed."""

    def __init__(self, margin: float = 0.25, gamma: float = 256.0) -> None:
        super().__init__()
        self.margin = margin  # relaxation m: optima at 1+m / -m, decision margins at 1-m / m
        self.gamma = gamma  # scale of the similarities inside the softplus

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return circle_loss(embeddings, labels, self.margin, self.gamma)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, gamma={self.gamma}"
