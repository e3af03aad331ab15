"""Pairwise contrastive baseline against an independent CLIP-style computation."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.interfaces import Batch, Encoder, Features
from selfsup.plugins.multimodal.contrastive import PairwiseContrastive
from selfsup.plugins.multimodal.encoder import TwoLevelTransformer

SHAPES = {"a": (3, 4), "b": (2, 4), "c": (5, 4)}


class MeanTokens(Encoder):
    """Embeds each modality given alone as a linear map of its mean token."""

    def __init__(self) -> None:
        super().__init__()
        self.out_dim = 4
        self.linear = nn.Linear(4, 4)

    def forward(self, x: dict[str, Tensor]) -> Features:
        return Features(global_=self.linear(torch.stack([t.mean(1) for t in x.values()]).mean(0)))


def _inputs(n: int = 8) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(1)
    return {m: torch.randn(n, t, f, generator=g) for m, (t, f) in SHAPES.items()}


def clip_loss(za: Tensor, zb: Tensor, temperature: float) -> Tensor:
    """CLIP's symmetric loss: mean of the two cross-entropies over the similarity matrix (reference)."""
    logits = F.normalize(za, dim=1) @ F.normalize(zb, dim=1).T / temperature
    target = torch.arange(len(za))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def test_loss_is_the_mean_clip_loss_over_all_pairs() -> None:
    torch.manual_seed(0)
    model = PairwiseContrastive(MeanTokens(), SHAPES)
    x = _inputs()
    out = model(Batch(inputs=x))
    z = {m: model.encoder({m: x[m]}).global_ for m in SHAPES}
    pairs = list(itertools.combinations(SHAPES, 2))
    expected = torch.stack([clip_loss(z[a], z[b], 0.1) for a, b in pairs]).mean()
    torch.testing.assert_close(out.loss, expected, atol=1e-5, rtol=1e-5)
    assert out.logs["pairs"] == 3.0 and len(pairs) == 3
    assert out.logs["mi"].item() == pytest.approx(torch.log(torch.tensor(8.0)).item() - expected.item(), abs=1e-5)


def test_one_direction_and_projection_heads() -> None:
    torch.manual_seed(0)
    model = PairwiseContrastive(MeanTokens(), {"a": (3, 4), "b": (2, 4)}, projection_dim=3, symmetric=False)
    x = {m: v for m, v in _inputs().items() if m in "ab"}
    za = model.projectors["a"](model.encoder({"a": x["a"]}).global_)
    zb = model.projectors["b"](model.encoder({"b": x["b"]}).global_)
    logits = F.normalize(za, dim=1) @ F.normalize(zb, dim=1).T / 0.1
    torch.testing.assert_close(model(Batch(inputs=x)).loss, F.cross_entropy(logits, torch.arange(8)))


def test_embed_any_subset_and_train_the_two_level_transformer() -> None:
    torch.manual_seed(0)
    model = PairwiseContrastive(TwoLevelTransformer(SHAPES, dim=8, heads=2), SHAPES)
    x = _inputs()
    per_modality = model.modality_embeddings(x)
    expected = F.normalize((per_modality["a"] + per_modality["c"]) / 2, dim=1)
    torch.testing.assert_close(model.embed({"a": x["a"], "c": x["c"]}), expected)
    model(Batch(inputs=x)).loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if n.startswith("encoder.level_one"))


def test_needs_two_modalities_and_a_mapping() -> None:
    with pytest.raises(ValueError, match="at least 2 modalities"):
        PairwiseContrastive(MeanTokens(), {"a": (3, 4)})
    model = PairwiseContrastive(MeanTokens(), SHAPES)
    with pytest.raises(ValueError, match="mapping"):
        model(Batch(inputs=torch.zeros(2, 1, 8, 8)))
    with pytest.raises(ValueError, match="at least 2 are needed"):
        model(Batch(inputs={"a": _inputs()["a"]}))
