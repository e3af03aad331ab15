"""The two-level transformer: one small transformer per modality, then a fusion transformer.

Level one encodes each modality's tokens ``[N, T_m, F_m]`` with its own transformer and
reads out its own [CLS] token. Level two attends over a fusion [CLS] plus one vector per
modality (its [CLS] output plus a learned modality embedding) and reads out the fusion
[CLS], projected and L2-normalised. Any subset of modalities can be given: absent ones are
simply left out of the fusion sequence, and per-sample absence is a key-padding mask. The
cost is one level-one pass per modality present (linear in M) plus a fusion over M + 1
vectors, instead of one attention over all ΣT_m tokens (quadratic in the total length).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.interfaces import Encoder, Features


def _transformer(dim: int, depth: int, heads: int, mlp_ratio: float, dropout: float) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(
        dim, heads, int(dim * mlp_ratio), dropout, activation="gelu", batch_first=True, norm_first=True
    )
    return nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)


class ModalityTransformer(nn.Module):
    """Level one: tokens ``[N, T, F]`` -> the modality's [CLS] output ``[N, dim]``.

    Linear token embedding, learned positions for [CLS] + T tokens, pre-norm transformer,
    final LayerNorm.
    """

    def __init__(self, tokens: int, features: int, dim: int, depth: int, heads: int, mlp_ratio: float,
                 dropout: float) -> None:
        super().__init__()
        self.tokens, self.features = tokens, features
        self.embed = nn.Linear(features, dim)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.position = nn.Parameter(torch.zeros(1, tokens + 1, dim))
        nn.init.trunc_normal_(self.cls, std=0.02)
        nn.init.trunc_normal_(self.position, std=0.02)
        self.blocks = _transformer(dim, depth, heads, mlp_ratio, dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        h = torch.cat([self.cls.expand(n, -1, -1), self.embed(x)], dim=1) + self.position  # [N, T+1, dim]
        return self.norm(self.blocks(h)[:, 0])  # [N, dim]


class TwoLevelTransformer(Encoder):
    """Per-modality transformers with [CLS], then a fusion transformer over the [CLS] vectors; L2-normalised output.

    modality_shapes: name -> (tokens, features), filled from multimodal data.
    dim: width of both levels; depth / fusion_depth: layers per modality / in the fusion;
    heads: attention heads; out_dim: width of the output (default: dim).
    modality_dropout: in training, drop each modality of each sample with this probability
        (masking it out of the fusion; at least one is kept), so the model learns to embed
        samples with modalities missing.

    ``forward(x, present=None)``: x maps modality name -> ``[N, T_m, F_m]`` for any
    non-empty subset of the known modalities; ``present`` optionally maps a name to a bool
    ``[N]`` marking the samples that have it (the others are masked out of the fusion, which
    equals running those samples without that modality). Returns ``Features(global_ [N, D])``
    with unit-norm rows.
    """

    #: The registry-wide conformance kit feeds images; this encoder reads modality mappings.
    conformance_params = "reads a mapping of modalities, not images; tests/plugins/multimodal checks it"

    def __init__(
        self,
        modality_shapes: dict[str, list[int]],
        dim: int = 64,
        depth: int = 1,
        fusion_depth: int = 1,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        out_dim: int | None = None,
        modality_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not modality_shapes:
            raise ValueError("modality_shapes must name at least one modality (multimodal data fills it)")
        for name, shape in modality_shapes.items():
            if len(shape) != 2 or any(int(s) < 1 for s in shape):
                raise ValueError(f"modality_shapes[{name!r}] must be (tokens, features) >= 1, got {shape}")
        if dim < 1 or depth < 1 or fusion_depth < 1 or heads < 1:
            raise ValueError("dim, depth, fusion_depth and heads must be positive")
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if not 0.0 <= modality_dropout < 1.0:
            raise ValueError(f"modality_dropout must be in [0, 1), got {modality_dropout}")
        self.modality_dropout = float(modality_dropout)
        self.names = list(modality_shapes)
        self.level_one = nn.ModuleDict({
            name: ModalityTransformer(int(t), int(f), dim, depth, heads, mlp_ratio, dropout)
            for name, (t, f) in modality_shapes.items()
        })
        self.modality_embedding = nn.Parameter(torch.zeros(len(self.names), dim))
        self.fusion_cls = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.modality_embedding, std=0.02)
        nn.init.trunc_normal_(self.fusion_cls, std=0.02)
        self.fusion = _transformer(dim, fusion_depth, heads, mlp_ratio, dropout)
        self.norm = nn.LayerNorm(dim)
        self.out_dim = int(out_dim or dim)
        self.head = nn.Linear(dim, self.out_dim)

    def _check(self, x: Mapping[str, Tensor]) -> list[str]:
        if not isinstance(x, Mapping):
            raise TypeError(f"{type(self).__name__} reads a mapping modality -> [N, T, F], got {type(x).__name__}")
        unknown = [m for m in x if m not in self.level_one]
        if unknown or not x:
            raise ValueError(f"modalities must be a non-empty subset of {', '.join(self.names)}, got {list(x)}")
        for m, tokens in x.items():
            block = self.level_one[m]
            if tokens.dim() != 3 or tokens.shape[1:] != (block.tokens, block.features):
                raise ValueError(
                    f"modality {m!r} must be [N, {block.tokens}, {block.features}], got {tuple(tokens.shape)}"
                )
        return [m for m in self.names if m in x]  # fixed order

    def forward(self, x: Mapping[str, Tensor], present: Mapping[str, Tensor] | None = None) -> Features:
        names = self._check(x)
        n = x[names[0]].shape[0]
        slots = [self.level_one[m](x[m]) + self.modality_embedding[self.names.index(m)] for m in names]  # M x [N, dim]
        sequence = torch.cat([self.fusion_cls.expand(n, -1, -1), torch.stack(slots, dim=1)], dim=1)  # [N, 1+M, dim]
        absent = torch.zeros(n, len(names), dtype=torch.bool, device=sequence.device)  # [N, M]
        if present is not None:
            absent = torch.stack([~present[m].bool() if m in present else absent[:, i] for i, m in enumerate(names)], 1)
        if self.training and self.modality_dropout > 0 and len(names) > 1:
            absent = absent | self._random_drop(n, len(names), sequence.device)
        mask = torch.cat([absent.new_zeros(n, 1), absent], dim=1) if bool(absent.any()) else None  # [N, 1+M]
        fused = self.norm(self.fusion(sequence, src_key_padding_mask=mask)[:, 0])  # [N, dim]
        return Features(global_=F.normalize(self.head(fused), dim=1))

    def _random_drop(self, n: int, m: int, device: torch.device) -> Tensor:
        """Bool ``[N, M]``: True drops the modality; every row keeps at least one."""
        drop = torch.rand(n, m, device=device) < self.modality_dropout
        all_dropped = drop.all(dim=1)
        if bool(all_dropped.any()):
            keep = torch.randint(m, (n,), device=device)
            drop[all_dropped, keep[all_dropped]] = False
        return drop
