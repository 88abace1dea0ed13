"""The ASD discriminator: a light head on the critic (fake-score) network's features.

*Inferred design* (the paper gives no code): a few learned query tokens cross-attend to the
critic's hidden states after a few transformer blocks (one small head per depth), the
per-depth summaries are averaged, and an MLP gives one logit per n (the student's step
count n in 1..N-1, since n-step vs (n+1)-step is a different comparison for each n).

The critic backbone is not updated by the discriminator loss: for D's own step the caller
computes the features under no_grad (or detaches them); for the generator step they carry
gradient back to the generated sample through the frozen critic.
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
                 hidden: int | None = None):
        super().__init__()
        self.num_depths = num_depths
        self.num_n = num_n
        self.heads = nn.ModuleList(QueryAttentionHead(width, num_queries, heads) for _ in range(num_depths))
        hidden = hidden or width
        self.mlp = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, hidden), nn.SiLU(), nn.Linear(hidden, num_n))

    def forward(self, features: list[torch.Tensor], n: torch.Tensor) -> torch.Tensor:
        """One logit per sample (B,), the one of its step count n (values 1..num_n)."""
        if len(features) != self.num_depths:
            raise ValueError(f"expected features from {self.num_depths} depths, got {len(features)}")
        n = torch.as_tensor(n, device=features[0].device).long().reshape(-1)
        if n.numel() == 1:
            n = n.expand(features[0].shape[0])
        if bool((n < 1).any()) or bool((n > self.num_n).any()):
            raise ValueError(f"n must lie in 1..{self.num_n}, got {n.tolist()}")
        summary = torch.stack([head(f) for head, f in zip(self.heads, features)]).mean(dim=0)  # (B, D)
        logits = self.mlp(summary)  # (B, num_n)
        return logits.gather(1, (n - 1)[:, None]).squeeze(1)
