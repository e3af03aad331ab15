"""The DIM objective: local negatives layout, loss terms against hand computations and
cortex_DIM's reference formulas, presets, encoders."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from selfsup.interfaces import Batch, Encoder, Features
from selfsup.plugins.common.critics import DotCritic
from selfsup.plugins.common.estimators import JSD, NWJ, DonskerVaradhan, InfoNCE
from selfsup.plugins.dim.critics import ConcatCritic, SeparableCritic, score_local_map
from selfsup.plugins.dim.encoders import DIMConvEncoder
from selfsup.plugins.dim.objective import PRESETS, DeepInfoMax, local_scores
from selfsup.plugins.dim.prior import AdversarialPrior


def sp(x: float) -> float:
    return math.log1p(math.exp(x))


class FixedEncoder(Encoder):
    """Returns the features it was given, whatever the input (plus a parameter to train)."""

    def __init__(self, global_: torch.Tensor, local: torch.Tensor | None) -> None:
        super().__init__()
        self.global_, self.local = global_, local
        self.scale = nn.Parameter(torch.ones(()))
        self.out_dim = global_.shape[1]
        self.local_channels = None if local is None else local.shape[1]

    def forward(self, x):
        n = x.shape[0]
        local = None if self.local is None else self.scale * self.local[:n]
        return Features(global_=self.scale * self.global_[:n], local=local)


# --------------------------------------------------------------------------- local layout
def test_local_scores_exclude_layout():
    u = torch.arange(12.0).view(3, 2, 2)[:2]  # N = 2 images, L = 2... build [2, 2, 3] explicitly
    u = torch.tensor([[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]],
                      [[6.0, 7.0, 8.0], [9.0, 10.0, 11.0]]])  # u[i, j, p]
    s = local_scores(u, "exclude")
    assert s.positive.tolist() == [[0.0, 1.0, 2.0], [9.0, 10.0, 11.0]]  # u[i, i, :]
    assert s.negative.tolist() == [[3.0, 4.0, 5.0], [6.0, 7.0, 8.0]]  # u[i, j != i, :]


def test_local_scores_exclude_layout_three_images():
    n, positions = 3, 2
    u = torch.arange(float(n * n * positions)).view(n, n, positions)
    s = local_scores(u, "exclude")
    assert s.positive.shape == (3, 2) and s.negative.shape == (3, 4)
    assert s.negative[1].tolist() == u[1, 0].tolist() + u[1, 2].tolist()  # image-major, j ascending


def test_local_scores_masked_constant_keeps_same_image_slots():
    u = torch.tensor([[[0.0, 1.0], [2.0, 3.0]], [[4.0, 5.0], [6.0, 7.0]]])
    s = local_scores(u, "masked_constant", masked_score=-10.0)
    assert s.positive.tolist() == [[0.0, 1.0], [6.0, 7.0]]
    assert s.negative.tolist() == [[-10.0, -10.0, 2.0, 3.0], [4.0, 5.0, -10.0, -10.0]]
    assert s.num_candidates == 1 + 2 * 2


def test_local_scores_of_the_second_process_rows_against_the_global_batch():
    # rank 1 of 2 holds images 2, 3 of 4: its rows are u[i, j, p] for i in {2, 3}, j in 0..3
    u = torch.arange(16.0).view(2, 4, 2)
    s = local_scores(u, "exclude", offset=2)
    assert s.positive.tolist() == [[4.0, 5.0], [14.0, 15.0]]  # u[0, 2, :] and u[1, 3, :]
    assert s.negative.tolist() == [[0.0, 1.0, 2.0, 3.0, 6.0, 7.0], [8.0, 9.0, 10.0, 11.0, 12.0, 13.0]]
    masked = local_scores(u, "masked_constant", masked_score=-10.0, offset=2)
    assert masked.negative[0].tolist() == [0.0, 1.0, 2.0, 3.0, -10.0, -10.0, 6.0, 7.0]
    whole = local_scores(torch.cat([u + 100.0, u]))  # one process on all 4 (rank 1's rows last): the same rows
    assert whole.positive[2:].tolist() == s.positive.tolist() and whole.negative[2:].tolist() == s.negative.tolist()
    with pytest.raises(ValueError, match="offset 3"):
        local_scores(u, offset=3)  # rows 3, 4 of 4 images


def test_local_scores_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 2 images"):
        local_scores(torch.zeros(1, 1, 3))
    with pytest.raises(ValueError, match=r"\[N, N, L\]"):
        local_scores(torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match="same_image"):
        local_scores(torch.zeros(2, 2, 3), "drop")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- cortex_DIM references
def cortex_nce_loss(l, g):
    """cortex_DIM's ``nce_loss`` (functions/dim_losses.py), on the CPU. l [N, C, L], g [N, C]."""
    n, units, n_locs = l.size()
    l_p = l.permute(0, 2, 1)
    u_p = torch.matmul(l_p, g.unsqueeze(dim=2))
    u_n = torch.mm(g, l_p.reshape(-1, units).t()).reshape(n, n, n_locs)
    mask = torch.eye(n).unsqueeze(dim=2)
    n_mask = 1 - mask
    u_n = (n_mask * u_n) - (10.0 * (1 - n_mask))
    u_n = u_n.reshape(n, -1).unsqueeze(dim=1).expand(-1, n_locs, -1)
    pred_log = F.log_softmax(torch.cat([u_p, u_n], dim=2), dim=2)
    return -pred_log[:, :, 0].mean()


def cortex_jsd_loss(l, g):
    """cortex_DIM's ``fenchel_dual_loss`` with measure JSD, on the CPU."""
    n, units, n_locs = l.size()
    u = torch.mm(g, l.permute(0, 2, 1).reshape(-1, units).t()).reshape(n, n, -1)
    mask = torch.eye(n)
    e_pos = (math.log(2.0) - F.softplus(-u)).mean(2)
    e_neg = (F.softplus(-u) + u - math.log(2.0)).mean(2)
    return (e_neg * (1 - mask)).sum() / (1 - mask).sum() - (e_pos * mask).sum() / mask.sum()


@pytest.fixture
def features():
    torch.manual_seed(0)
    return torch.randn(5, 4), torch.randn(5, 4, 3, 2)  # global [N, C], local [N, C, H, W]


def test_local_infonce_masked_constant_matches_cortex_nce_loss(features):
    g, local = features
    scores = score_local_map(DotCritic(), g, local)
    ours = InfoNCE()(local_scores(scores, "masked_constant")).loss
    torch.testing.assert_close(ours, cortex_nce_loss(local.flatten(2), g))
    # excluding same-image positions (the paper's equation) is a different, smaller loss
    excluded = InfoNCE()(local_scores(scores, "exclude")).loss
    assert excluded.item() < ours.item()


def test_local_infonce_exclude_by_hand(features):
    g, local = features
    l = local.flatten(2)  # [N, C, L]
    total, count = 0.0, 0
    for i in range(5):
        negatives = [float(g[i] @ l[j, :, q]) for j in range(5) if j != i for q in range(6)]
        for p in range(6):
            pos = float(g[i] @ l[i, :, p])
            total += -pos + math.log(math.exp(pos) + sum(math.exp(v) for v in negatives))
            count += 1
    ours = InfoNCE()(local_scores(score_local_map(DotCritic(), g, local), "exclude")).loss
    assert ours.item() == pytest.approx(total / count, rel=1e-5)


def test_local_jsd_matches_cortex_fenchel_dual_loss(features):
    g, local = features
    ours = JSD()(local_scores(score_local_map(DotCritic(), g, local), "exclude")).loss
    # cortex's JSD expectations carry log 2 offsets: loss_cortex = loss_ours - log 4
    assert ours.item() == pytest.approx(cortex_jsd_loss(local.flatten(2), g).item() + math.log(4.0), rel=1e-5)


def test_local_dv_is_the_papers_equation(features):
    g, local = features
    u = score_local_map(DotCritic(), g, local)  # [N, N, L]
    same = torch.eye(5, dtype=torch.bool)
    expected = u[same].mean() - torch.log(torch.exp(u[~same]).mean())  # E_joint[T] - log E_marginal[e^T]
    torch.testing.assert_close(DonskerVaradhan()(local_scores(u)).mi, expected)


# --------------------------------------------------------------------------- the objective
def test_dim_loss_terms_by_hand():
    # N = 2, D = C = 1, a 1x1 local map; dot critics everywhere
    g = torch.tensor([[1.0], [2.0]])
    local = torch.tensor([[1.0], [-1.0]]).view(2, 1, 1, 1)
    encoder = FixedEncoder(g, local)
    # scores g_i * l_j = [[1, -1], [2, -2]]: positives 1, -2; negatives -1, 2
    jsd_each = (sp(-1) + sp(2)) / 2 + (sp(-1) + sp(2)) / 2
    dim = DeepInfoMax(encoder, alpha=1.0, beta=0.5, gamma=0.0, estimator=JSD(), local_critic=DotCritic(),
                      global_critic=DotCritic(), in_channels=1, image_size=4)
    out = dim(Batch(inputs=torch.zeros(2, 1, 4, 4)))
    assert out.loss.item() == pytest.approx(1.0 * jsd_each + 0.5 * jsd_each, rel=1e-6)
    assert out.logs["mi_global"].item() == pytest.approx(math.log(4) - jsd_each, rel=1e-6)
    assert out.logs["mi"].item() == out.logs["mi_local"].item()


@pytest.mark.parametrize("estimator", [JSD(), InfoNCE(), DonskerVaradhan(), NWJ(), DonskerVaradhan(ema_decay=0.9)])
def test_every_estimator_trains_dim(estimator):
    torch.manual_seed(0)
    dim = DeepInfoMax(DIMConvEncoder(1, 8, fc_dim=32), preset="L+G", estimator=estimator,
                      local_critic=SeparableCritic(hidden_dim=16, embedding_dim=16),
                      global_critic=ConcatCritic(hidden_dim=16), prior=AdversarialPrior(hidden_dims=[16]),
                      in_channels=1, image_size=8)
    out = dim(Batch(inputs=torch.rand(6, 1, 8, 8)))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert dim.encoder.convs[0][0].weight.grad.abs().sum() > 0
    assert dim.global_estimator is not dim.estimator  # separate state for the global term


def test_presets_and_overrides():
    for name, (a, b, c) in PRESETS.items():
        dim = DeepInfoMax(preset=name, in_channels=1, image_size=8)
        assert (dim.alpha, dim.beta, dim.gamma) == (a, b, c)
        assert (dim.global_critic is not None) == (a > 0) and (dim.local_critic is not None) == (b > 0)
        assert (dim.prior is not None) == (c > 0)
    assert PRESETS == {"G": (1.0, 0.0, 1.0), "L": (0.0, 1.0, 0.1), "L+G": (0.5, 0.1, 0.1)}
    custom = DeepInfoMax(preset="L", gamma=0.0, alpha=0.25, in_channels=1, image_size=8)
    assert (custom.alpha, custom.beta, custom.gamma) == (0.25, 1.0, 0.0) and custom.prior is None
    with pytest.raises(ValueError, match="alpha or beta > 0"):
        DeepInfoMax(preset="G", alpha=0.0, in_channels=1, image_size=8)
    with pytest.raises(ValueError, match="preset must be one of"):
        DeepInfoMax(preset="X", in_channels=1, image_size=8)  # type: ignore[arg-type]


def test_dim_reads_inputs_and_ignores_views():
    torch.manual_seed(0)
    dim = DeepInfoMax(preset="L", gamma=0.0, in_channels=1, image_size=8).eval()
    assert DeepInfoMax.num_views == 0
    x = torch.rand(4, 1, 8, 8)
    plain = dim(Batch(inputs=x)).loss
    with_views = dim(Batch(inputs=x, views=[torch.full_like(x, float("nan"))])).loss
    assert torch.equal(plain, with_views)


def test_encoder_without_local_map_is_rejected():
    with pytest.raises(ValueError, match="needs an encoder that returns a local feature map"):
        DeepInfoMax(FixedEncoder(torch.zeros(2, 3), None), in_channels=1, image_size=8)


def test_any_encoder_with_a_local_map_works(registry):
    encoder = registry.create("encoder", "small_conv", in_channels=3, image_size=8, width=4)
    dim = DeepInfoMax(encoder, preset="L+G", in_channels=3, image_size=8)
    out = dim(Batch(inputs=torch.rand(4, 3, 8, 8)))
    out.loss.backward()
    assert torch.isfinite(out.loss) and dim.embed(torch.rand(2, 3, 8, 8)).shape == (2, 32)


# --------------------------------------------------------------------------- encoder
@pytest.mark.parametrize(
    "size, channels, variant, local_shape",
    [(32, 3, "32x32", (128, 8, 8)), (28, 1, "28x28", (128, 7, 7)), (8, 1, "28x28", (128, 2, 2)), (64, 1, "32x32", (128, 16, 16))],
)
def test_dim_conv_variants(size, channels, variant, local_shape):
    encoder = DIMConvEncoder(in_channels=channels, image_size=size)
    assert encoder.variant == variant
    features = encoder.eval()(torch.rand(2, channels, size, size))
    assert features.global_.shape == (2, 64) and tuple(features.local.shape[1:]) == local_shape
    assert encoder.out_dim == 64 and encoder.local_channels == 128


def test_dim_conv_32_architecture():
    encoder = DIMConvEncoder(in_channels=3, image_size=32)
    convs = [layer[0] for layer in encoder.convs]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (64, (4, 4), (2, 2)), (128, (4, 4), (2, 2)), (256, (4, 4), (2, 2))
    ]
    assert encoder.fc[1].in_features == 256 * 4 * 4 and encoder.fc[1].out_features == 1024
    assert encoder.head.out_features == 64
    with pytest.raises(ValueError, match="too small"):
        DIMConvEncoder(image_size=4, variant="32x32")


def test_layer_outputs_and_embed_layer(registry):
    torch.manual_seed(0)
    encoder = DIMConvEncoder(in_channels=1, image_size=28).eval()
    x = torch.rand(3, 1, 28, 28)
    outputs = encoder.layer_outputs(x)
    features = encoder(x)
    torch.testing.assert_close(outputs["code"], features.global_)
    torch.testing.assert_close(outputs["conv"], features.local.flatten(1))  # 28x28: the local map is the last conv
    assert outputs["fc"].shape == (3, 1024) and (outputs["fc"] >= 0).all()  # after BN-ReLU
    dim = DeepInfoMax(encoder, embed_layer="fc", in_channels=1, image_size=28).eval()
    torch.testing.assert_close(dim.embed(x), outputs["fc"])
    small = registry.create("encoder", "small_conv", in_channels=1, image_size=8, width=4)
    with pytest.raises(ValueError, match="needs an encoder with layer_outputs"):
        DeepInfoMax(small, embed_layer="fc", in_channels=1, image_size=8)


def test_dim_conv_local_layer_choice():
    encoder = DIMConvEncoder(in_channels=1, image_size=8, local_layer=0).eval()
    assert encoder.local_channels == 64 and encoder(torch.rand(2, 1, 8, 8)).local.shape == (2, 64, 4, 4)
    with pytest.raises(ValueError, match="local_layer must be in 0..1"):
        DIMConvEncoder(image_size=28, local_layer=2)
