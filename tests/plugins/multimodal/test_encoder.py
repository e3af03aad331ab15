"""The two-level transformer: unit-norm output, masking = absence, any subset, gradients, errors."""

from __future__ import annotations

import pytest
import torch

from selfsup.config import build
from selfsup.errors import ConfigError
from selfsup.plugins.multimodal.encoder import TwoLevelTransformer

SHAPES = {"patches": (16, 4), "rows": (8, 8), "spectrum": (8, 5)}


def _inputs(n: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(n, t, f, generator=g) for m, (t, f) in SHAPES.items()}


@pytest.fixture
def encoder() -> TwoLevelTransformer:
    torch.manual_seed(0)
    return TwoLevelTransformer(SHAPES, dim=16, depth=1, fusion_depth=2, heads=2, out_dim=12).eval()


def test_output_is_unit_norm_for_every_subset(encoder) -> None:
    x = _inputs()
    for subset in (["patches"], ["rows", "spectrum"], list(SHAPES)):
        z = encoder({m: x[m] for m in subset}).global_
        assert z.shape == (6, 12)
        torch.testing.assert_close(z.norm(dim=1), torch.ones(6))
    assert encoder.out_dim == 12


def test_masking_a_modality_equals_running_without_it(encoder) -> None:
    x = _inputs()
    present = {"rows": torch.tensor([True, False, True, False, True, True])}
    masked = encoder(x, present=present).global_
    without_rows = encoder({m: x[m] for m in ("patches", "spectrum")}).global_
    full = encoder(x).global_
    missing = ~present["rows"]
    torch.testing.assert_close(masked[missing], without_rows[missing], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(masked[~missing], full[~missing], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(full[missing], without_rows[missing], atol=1e-3)  # the modality mattered
    # garbage in a masked modality changes nothing
    noisy = dict(x, rows=x["rows"] + 100 * torch.randn_like(x["rows"]))
    torch.testing.assert_close(encoder(noisy, present=present).global_[missing], masked[missing], atol=1e-5, rtol=1e-5)


def test_modality_order_in_the_mapping_does_not_matter(encoder) -> None:
    x = _inputs()
    reordered = {m: x[m] for m in reversed(list(SHAPES))}
    torch.testing.assert_close(encoder(reordered).global_, encoder(x).global_)


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    encoder = TwoLevelTransformer(SHAPES, dim=16, heads=2)
    z = encoder(_inputs()).global_
    (z @ torch.randn(16)).sum().backward()
    missing = [n for n, p in encoder.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
               or p.grad.abs().sum() == 0]
    assert missing == []


def test_modality_dropout_in_training_only_and_keeps_one() -> None:
    torch.manual_seed(0)
    encoder = TwoLevelTransformer(SHAPES, dim=16, heads=2, modality_dropout=0.9)
    drop = encoder._random_drop(500, 3, torch.device("cpu"))
    assert not bool(drop.all(dim=1).any()) and drop.float().mean() > 0.5
    x = _inputs()
    encoder.eval()
    torch.testing.assert_close(encoder(x).global_, encoder(x).global_)  # no randomness in eval
    encoder.train()
    assert not torch.allclose(encoder(x).global_, encoder(x).global_)


def test_bad_inputs_and_parameters(encoder, registry) -> None:
    x = _inputs()
    with pytest.raises(ValueError, match="subset of patches, rows, spectrum"):
        encoder({"audio": x["rows"]})
    with pytest.raises(ValueError, match=r"'rows' must be \[N, 8, 8\]"):
        encoder({"rows": x["rows"][:, :4]})
    with pytest.raises(TypeError, match="mapping"):
        encoder(x["rows"])
    with pytest.raises(ValueError, match="divisible"):
        TwoLevelTransformer(SHAPES, dim=10, heads=4)
    with pytest.raises(ConfigError, match="modality_shapes: missing required parameter"):
        build(registry, "encoder", {"name": "two_level_transformer"}, "objective.encoder", {"in_channels": 1})
    built = build(registry, "encoder", {"name": "two_level_transformer", "dim": 8, "heads": 2}, "objective.encoder",
                  {"modality_shapes": SHAPES})
    assert built.names == list(SHAPES)
