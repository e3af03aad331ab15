import pytest
import torch
import torch.nn.functional as F

from selfsup.plugins.common.critics import BilinearCritic, CosineCritic, DotCritic
from selfsup.plugins.common.momentum import cosine_momentum, frozen_copy, momentum_update
from selfsup.plugins.common.samplers import InBatchNegatives, MomentumQueue


def test_dot_critic_hand_computation():
    q = torch.tensor([[1.0, 2.0]])
    k = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
    assert DotCritic(temperature=0.5)(q, k).tolist() == [[22.0, 4.0]]
    assert DotCritic(0.5).pair(q, k[:1]).tolist() == [22.0]


def test_cosine_critic_is_scale_free():
    q, k = torch.randn(4, 8), torch.randn(5, 8)
    c = CosineCritic(temperature=0.1)
    torch.testing.assert_close(c(q, k), c(3 * q, 0.5 * k))
    torch.testing.assert_close(c.pair(q, q), torch.full((4,), 10.0))


def test_bilinear_starts_as_dot_product():
    q, k = torch.randn(3, 4), torch.randn(6, 4)
    torch.testing.assert_close(BilinearCritic(4)(q, k), q @ k.T)
    torch.testing.assert_close(BilinearCritic(4).pair(q, k[:3]), (q * k[:3]).sum(1))


def test_critic_rejects_bad_temperature():
    with pytest.raises(ValueError, match="temperature must be > 0"):
        DotCritic(temperature=0.0)


def test_queue_order_and_wraparound():
    queue = MomentumQueue(size=5)
    queue.setup(dim=1)
    queue.update(torch.tensor([[1.0], [2.0], [3.0]]))
    assert queue.keys[:3].squeeze(1).tolist() == [1.0, 2.0, 3.0]
    assert int(queue.pointer) == 3
    queue.update(torch.tensor([[4.0], [5.0], [6.0]]))  # 4, 5 fill the end, 6 wraps to slot 0
    assert queue.keys.squeeze(1).tolist() == [6.0, 2.0, 3.0, 4.0, 5.0]
    assert int(queue.pointer) == 1
    queue.update(torch.arange(10.0, 17.0).unsqueeze(1))  # more keys than slots: the newest 5 win
    assert sorted(queue.keys.squeeze(1).tolist()) == [12.0, 13.0, 14.0, 15.0, 16.0]
    assert int(queue.pointer) == 1


def test_queue_state_round_trip_is_exact():
    a = MomentumQueue(size=7)
    a.setup(dim=3)
    a.update(torch.randn(4, 3))
    b = MomentumQueue(size=7)
    b.setup(dim=3)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.keys, b.keys) and int(a.pointer) == int(b.pointer)


def test_queue_scores_layout():
    queue = MomentumQueue(size=6)
    queue.setup(dim=4)
    q, k = F.normalize(torch.randn(3, 4), dim=1), F.normalize(torch.randn(3, 4), dim=1)
    scores = queue.score(DotCritic(0.2), q, k)
    assert scores.positive.shape == (3, 1) and scores.negative.shape == (3, 6)
    torch.testing.assert_close(scores.negative, q @ queue.keys.T / 0.2)


def test_in_batch_negatives_counts():
    q, k = torch.randn(5, 4), torch.randn(5, 4)
    one = InBatchNegatives().score(DotCritic(), q, k)
    assert one.positive.shape == (5, 1) and one.negative.shape == (5, 4)
    torch.testing.assert_close(one.positive.squeeze(1), (q * k).sum(1))
    both = InBatchNegatives(both_views=True).score(DotCritic(), q, k)
    assert both.negative.shape == (5, 8)  # SimCLR: 2N - 2
    expected_row0 = torch.cat([(q[0] * k[1:]).sum(1), (q[0] * q[1:]).sum(1)])
    torch.testing.assert_close(both.negative[0], expected_row0)


def test_momentum_update_matches_reference_formula():
    online = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    target = frozen_copy(online)
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))
    before = [p.clone() for p in target.parameters()]
    momentum_update(target, online, 0.9)
    for t, b, o in zip(target.parameters(), before, online.parameters()):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * o)
        assert not t.requires_grad


def test_cosine_momentum_schedule_endpoints():
    assert cosine_momentum(0.99, 0, 100) == pytest.approx(0.99)
    assert cosine_momentum(0.99, 50, 100) == pytest.approx(0.995)
    assert cosine_momentum(0.99, 100, 100) == pytest.approx(1.0)
