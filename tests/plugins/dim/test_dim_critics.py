"""DIM critics against hand computations and explicit (concatenate / 1x1-conv) references."""

import math

import pytest
import torch
import torch.nn.functional as F

from selfsup.plugins.common.critics import DotCritic
from selfsup.plugins.dim.critics import (
    ConcatCritic,
    EmbeddingNet,
    SeparableCritic,
    map_to_vectors,
    score_local_map,
    setup_critic,
)


def linear_separable(query_weight, key_weight) -> SeparableCritic:
    """A separable critic whose nets are single bias-free linear maps with the given weights."""
    critic = SeparableCritic(query_weight.shape[1], key_weight.shape[1], hidden_dim=4,
                             embedding_dim=query_weight.shape[0], num_hidden_layers=0, shortcut=False, batch_norm=False,
                             temperature=1.0)
    with torch.no_grad():
        critic.query_net.block[0].weight.copy_(query_weight)
        critic.key_net.block[0].weight.copy_(key_weight)
        critic.query_net.block[0].bias.zero_()
        critic.key_net.block[0].bias.zero_()
    return critic


def test_separable_hand_computation():
    # f(q) = A q, g(k) = B k; score = (A q) . (B k)
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    critic = linear_separable(a, b)
    q = torch.tensor([[1.0, 1.0], [2.0, -1.0]])  # f: [1, 2], [2, -2]
    k = torch.tensor([[3.0, 0.0], [1.0, 2.0], [0.0, 0.0]])  # g: [0, 3], [2, 3], [0, 0]
    expected = torch.tensor([[6.0, 8.0, 0.0], [-6.0, -2.0, 0.0]])
    torch.testing.assert_close(critic(q, k), expected)
    torch.testing.assert_close(critic.pair(q, k[:2]), torch.tensor([6.0, -2.0]))


def test_separable_with_identity_nets_is_the_dot_critic():
    # identical embeddings in both nets: the critic is q . k, so identical inputs score |q|^2
    critic = linear_separable(torch.eye(3), torch.eye(3))
    q, k = torch.randn(4, 3), torch.randn(5, 3)
    torch.testing.assert_close(critic(q, k), DotCritic()(q, k))
    torch.testing.assert_close(critic.pair(q, q), (q * q).sum(1))


def test_separable_temperature_divides_and_defaults_to_sqrt_embedding_dim():
    critic = linear_separable(torch.eye(2), torch.eye(2))
    critic.temperature = 0.5
    q = torch.tensor([[1.0, 2.0]])
    assert critic(q, q).item() == pytest.approx(10.0)
    assert SeparableCritic(embedding_dim=256).temperature == 16.0


def test_embedding_net_shortcut_starts_near_identity_and_adds():
    net = EmbeddingNet(3, 5, hidden_dim=4, num_hidden_layers=1, shortcut=True)
    w = net.shortcut.weight
    torch.testing.assert_close(w[:3, :3].diagonal(), torch.ones(3))
    off_diagonal = w.clone()
    off_diagonal[:3, :3].fill_diagonal_(0.0)
    assert off_diagonal.abs().max() <= 0.01
    x = torch.randn(6, 3)
    torch.testing.assert_close(net(x), net.block(x) + x @ w.T)
    # works on any leading shape (a map read as [M, HW, C])
    torch.testing.assert_close(net(x.view(2, 3, 3)), net(x).view(2, 3, 5))


def test_separable_score_local_equals_one_by_one_convolutions():
    torch.manual_seed(0)
    critic = SeparableCritic(4, 3, hidden_dim=6, embedding_dim=5, batch_norm=False)
    query, local = torch.randn(2, 4), torch.randn(3, 3, 2, 2)
    # reference: the key net as 1x1 convolutions on the map
    first, second = critic.key_net.block[0], critic.key_net.block[2]
    h = F.relu(F.conv2d(local, first.weight[:, :, None, None], first.bias))
    emb = F.conv2d(h, second.weight[:, :, None, None], second.bias)
    emb = emb + F.conv2d(local, critic.key_net.shortcut.weight[:, :, None, None])  # [M, E, H, W]
    q = critic.embed_query(query)  # [N, E]
    expected = torch.einsum("ne,mehw->nmhw", q, emb).reshape(2, 3, 4) / math.sqrt(5)  # default T = sqrt(E)
    torch.testing.assert_close(critic.score_local(query, local), expected)
    torch.testing.assert_close(score_local_map(critic, query, local), expected)


def concat_reference(critic: ConcatCritic, query, keys):
    """Explicit per-pair concatenation through the MLP."""
    out = torch.empty(query.shape[0], keys.shape[0])
    for i in range(query.shape[0]):
        for j in range(keys.shape[0]):
            h = critic.first(torch.cat([query[i], keys[j]]).unsqueeze(0))
            out[i, j] = critic.rest(h).squeeze()
    return out


def test_concat_hand_computation():
    # one hidden unit: score = w2 * relu(w1 . [q; k] + b1) + b2
    critic = ConcatCritic(1, 1, hidden_dim=1, num_hidden_layers=1)
    with torch.no_grad():
        critic.first.weight.copy_(torch.tensor([[1.0, -1.0]]))
        critic.first.bias.fill_(0.5)
        critic.rest[-1].weight.fill_(2.0)
        critic.rest[-1].bias.fill_(-1.0)
    q, k = torch.tensor([[1.0], [3.0]]), torch.tensor([[0.0], [2.0], [5.0]])
    # pre-activations q - k + 0.5: [[1.5, -0.5, -3.5], [3.5, 1.5, -1.5]] -> 2 relu(.) - 1
    expected = torch.tensor([[2.0, -1.0, -1.0], [6.0, 2.0, -1.0]])
    torch.testing.assert_close(critic(q, k), expected)
    torch.testing.assert_close(critic.pair(q, k[:2]), torch.tensor([2.0, 2.0]))


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_concat_all_pairs_equal_explicit_concatenation(layers):
    torch.manual_seed(layers)
    critic = ConcatCritic(3, 4, hidden_dim=8, num_hidden_layers=layers)
    q, k = torch.randn(3, 3), torch.randn(5, 4)
    torch.testing.assert_close(critic(q, k), concat_reference(critic, q, k))
    torch.testing.assert_close(critic.pair(q, k[:3]), torch.diagonal(concat_reference(critic, q, k[:3])))


def test_concat_score_local_is_tile_concat_and_convolve():
    torch.manual_seed(1)
    critic = ConcatCritic(2, 3, hidden_dim=5, num_hidden_layers=2)
    query, local = torch.randn(2, 2), torch.randn(3, 3, 2, 2)
    lin1, lin2, lin3 = critic.first, critic.rest[1], critic.rest[3]
    expected = torch.empty(2, 3, 4)
    for i in range(2):
        tiled = query[i].view(1, 2, 1, 1).expand(3, 2, 2, 2)  # the global vector at every position
        x = torch.cat([tiled, local], dim=1)  # [M, Dq + C, H, W]
        x = F.relu(F.conv2d(x, lin1.weight[:, :, None, None], lin1.bias))
        x = F.relu(F.conv2d(x, lin2.weight[:, :, None, None], lin2.bias))
        expected[i] = F.conv2d(x, lin3.weight[:, :, None, None], lin3.bias).reshape(3, 4)
    torch.testing.assert_close(critic.score_local(query, local), expected)


def test_concat_independent_inputs_score_alike():
    # a critic that ignores its inputs (zero first-layer weights) scores every pair the same
    critic = ConcatCritic(2, 2, hidden_dim=4)
    with torch.no_grad():
        critic.first.weight.zero_()
    scores = critic(torch.randn(3, 2), torch.randn(4, 2))
    torch.testing.assert_close(scores, scores[0, 0].expand(3, 4))


def test_score_local_map_falls_back_to_positions_as_keys():
    query, local = torch.randn(2, 3), torch.randn(4, 3, 2, 2)
    expected = torch.einsum("nc,mchw->nmhw", query, local).reshape(2, 4, 4) / 0.5
    torch.testing.assert_close(score_local_map(DotCritic(0.5), query, local), expected)
    assert map_to_vectors(local).shape == (16, 3)
    torch.testing.assert_close(map_to_vectors(local)[5], local[1, :, 0, 1])


def test_late_setup_and_errors():
    critic = SeparableCritic(hidden_dim=4, embedding_dim=4)
    with pytest.raises(RuntimeError, match="no input widths"):
        critic(torch.randn(2, 3), torch.randn(2, 3))
    setup_critic(critic, 3, 5)
    assert critic(torch.randn(2, 3), torch.randn(4, 5)).shape == (2, 4)
    setup_critic(critic, 3, 5)  # same widths: no-op
    with pytest.raises(ValueError, match="was built for query width 3"):
        critic.setup(3, 6)
    setup_critic(DotCritic(), 3, 5)  # critics without networks ignore setup
    with pytest.raises(ValueError, match="both query_dim and key_dim"):
        SeparableCritic(query_dim=3)
    with pytest.raises(ValueError, match="embedding_dim must be a positive integer"):
        SeparableCritic(embedding_dim=0)
    with pytest.raises(ValueError, match="num_hidden_layers must be a positive integer"):
        ConcatCritic(num_hidden_layers=0)
    with pytest.raises(ValueError, match="local map must be"):
        score_local_map(critic, torch.randn(2, 3), torch.randn(2, 5))


def test_critics_are_registered(registry):
    assert isinstance(registry.create("critic", "separable", query_dim=2, key_dim=2), SeparableCritic)
    assert isinstance(registry.create("critic", "concat", query_dim=2, key_dim=2), ConcatCritic)
