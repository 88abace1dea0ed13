"""The ASD discriminator: a light head on the critic (fake-score) network's features.

*Inferred design* (the paper gives no code): a few learned query tokens cross-attend to the
critic's hidden states after a few transformer blocks (one small head per depth), the
per-depth summaries are averaged, and an MLP gives one logit per n (the student's step
count n in 1..N-1, since n-step vs (n+1)-step is a different comparison for each n).

The critic backbone is not updated by the discriminator loss: for D's own step the caller
computes the features under no_grad (or detaches them); for the generator step they carry
gradient back to the generated sample through the frozen critic.

Optionally caption-aware (`context_dim` > 0), as a projection discriminator (Miyato & Koyama
2018): each logit gains the inner product of the summary with a projection of the pooled
caption. Both branches share their caption, so only this term's difference between them
counts: it lets D rank the sample that shows the caption better, which a caption-blind head
cannot ask for (the backbone's features are caption-conditioned, the pooled summary is not).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange


class QueryAttentionHead(nn.Module):
    """Learned queries cross-attending to one depth's tokens (B, S, D) -> (B, D) summary."""

    def __init__(self, width: int, num_queries: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} must be divisible by heads {heads}")
        self.heads = heads
        self.queries = nn.Parameter(torch.randn(num_queries, width) * 0.02)
        self.norm = nn.LayerNorm(width)
        self.to_kv = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        keys, values = self.to_kv(self.norm(features.float())).chunk(2, dim=-1)
        queries = self.queries.expand(features.shape[0], -1, -1)
        split = "b s (h d) -> b h s d"
        attended = F.scaled_dot_product_attention(rearrange(queries, split, h=self.heads),
                                                  rearrange(keys, split, h=self.heads),
                                                  rearrange(values, split, h=self.heads))
        return self.out(rearrange(attended, "b h q d -> b q (h d)")).mean(dim=1)  # (B, D)


class ASDDiscriminator(nn.Module):
    def __init__(self, width: int, num_depths: int, num_n: int, num_queries: int = 4, heads: int = 4,
                 hidden: int | None = None, context_dim: int = 0):
        super().__init__()
        self.num_depths = num_depths
        self.num_n = num_n
        self.context_dim = context_dim
        self.heads = nn.ModuleList(QueryAttentionHead(width, num_queries, heads) for _ in range(num_depths))
        hidden = hidden or width
        self.mlp = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, hidden), nn.SiLU(), nn.Linear(hidden, num_n))
        if context_dim:  # one caption projection per n, like the MLP's one output per n
            self.caption = nn.Sequential(nn.LayerNorm(context_dim), nn.Linear(context_dim, num_n * width))

    def forward(self, features: list[torch.Tensor], n: torch.Tensor, context: torch.Tensor | None = None
                ) -> torch.Tensor:
        """One logit per sample (B,), the one of its step count n (values 1..num_n).

        context: (B, L, context_dim) caption embeddings (padding zeroed), needed when the head
        is caption-aware, ignored otherwise.
        """
        if len(features) != self.num_depths:
            raise ValueError(f"expected features from {self.num_depths} depths, got {len(features)}")
        if self.context_dim and (context is None or context.shape[-1] != self.context_dim
                                 or context.shape[0] != features[0].shape[0]):
            got = None if context is None else tuple(context.shape)
            raise ValueError(f"this discriminator is caption-aware: it needs context (B={features[0].shape[0]}, "
                             f"L, {self.context_dim}), got {got}")
        n = torch.as_tensor(n, device=features[0].device).long().reshape(-1)
        if n.numel() == 1:
            n = n.expand(features[0].shape[0])
        if bool((n < 1).any()) or bool((n > self.num_n).any()):
            raise ValueError(f"n must lie in 1..{self.num_n}, got {n.tolist()}")
        summary = torch.stack([head(f) for head, f in zip(self.heads, features)]).mean(dim=0)  # (B, D)
        logits = self.mlp(summary)  # (B, num_n)
        if self.context_dim:
            caption = self.caption(pooled_caption(context.float()))  # (B, num_n * D)
            logits = logits + torch.einsum("bd,bnd->bn", summary, rearrange(caption, "b (n d) -> b n d", n=self.num_n))
        return logits.gather(1, (n - 1)[:, None]).squeeze(1)


def pooled_caption(context: torch.Tensor) -> torch.Tensor:
    """Mean over the caption's real tokens (B, L, D) -> (B, D); padding rows are all zero.

    An all-padding (empty) caption pools to zeros rather than dividing by zero.
    """
    real = (context.abs().sum(dim=-1, keepdim=True) > 0).to(context.dtype)
    return (context * real).sum(dim=1) / real.sum(dim=1).clamp(min=1)
