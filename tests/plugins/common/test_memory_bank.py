"""Memory bank (InstDisc / NPID) and the exact checkpoint round trip of queue and bank."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F

from selfsup.plugins.common.critics import DotCritic
from selfsup.plugins.common.samplers import MemoryBank, MomentumQueue


def make_bank(num_samples: int = 10, dim: int = 4, seed: int = 0, **kwargs) -> MemoryBank:
    torch.manual_seed(seed)
    bank = MemoryBank(**kwargs)
    bank.setup(dim, num_samples)
    return bank


def round_trip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)  # how checkpoints are read


def test_setup_allocates_one_unit_vector_per_sample():
    bank = make_bank(num_samples=50, dim=8)
    assert bank.bank.shape == (50, 8)
    torch.testing.assert_close(bank.bank.norm(dim=1), torch.ones(50))
    with pytest.raises(ValueError, match="training-set size"):
        MemoryBank().setup(8, None)


def test_constructor_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_negatives"):
        MemoryBank(num_negatives=0)
    with pytest.raises(ValueError, match="momentum"):
        MemoryBank(momentum=1.0)
    with pytest.raises(ValueError, match="positive"):
        MemoryBank(positive="query")


def test_update_is_the_npid_momentum_rule_in_place():
    bank = make_bank(num_samples=6, dim=2, momentum=0.5)
    before = bank.bank.clone()
    pointer = bank.bank.data_ptr()
    key = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    bank.update(key, torch.tensor([4, 1]))
    for slot, k in ((4, key[0]), (1, key[1])):
        expected = 0.5 * before[slot] + 0.5 * k
        torch.testing.assert_close(bank.bank[slot], expected / expected.norm())  # hand computation
    untouched = [0, 2, 3, 5]
    assert torch.equal(bank.bank[untouched], before[untouched])
    bank.score(DotCritic(), torch.randn(2, 2), key, torch.tensor([4, 1]))
    assert bank.bank.data_ptr() == pointer  # one tensor, updated in place, never reallocated
    with pytest.raises(ValueError, match="batch.index"):
        bank.update(key)


def test_unnormalised_update_keeps_the_average():
    bank = make_bank(num_samples=3, dim=2, momentum=0.25, normalize=False)
    before = bank.bank[2].clone()
    bank.update(torch.tensor([[4.0, -4.0]]), torch.tensor([2]))
    torch.testing.assert_close(bank.bank[2], 0.25 * before + 0.75 * torch.tensor([4.0, -4.0]))


def test_scores_use_the_drawn_slots_and_the_key_or_bank_positive():
    bank = make_bank(num_samples=30, dim=4, num_negatives=7)
    twin = make_bank(num_samples=1, dim=4, num_negatives=7)
    twin.load_state_dict(bank.state_dict())  # same state -> same next draw
    query, key = F.normalize(torch.randn(3, 4), dim=1), F.normalize(torch.randn(3, 4), dim=1)
    scores = bank.score(DotCritic(0.5), query, key, torch.tensor([0, 1, 2]))
    drawn = twin.draw_negatives(torch.device("cpu"))
    assert scores.positive.shape == (3, 1) and scores.negative.shape == (3, 7)
    torch.testing.assert_close(scores.negative, query @ bank.bank[drawn].T / 0.5)
    torch.testing.assert_close(scores.positive[:, 0], (query * key).sum(1) / 0.5)
    npid = make_bank(num_samples=30, dim=4, num_negatives=7, positive="bank")
    own = npid.score(DotCritic(0.5), query, key, torch.tensor([5, 6, 7]))
    torch.testing.assert_close(own.positive[:, 0], (query * npid.bank[5:8]).sum(1) / 0.5)


def test_draws_are_uniform_and_change_every_step():
    bank = make_bank(num_samples=20, num_negatives=1000)
    draws = torch.stack([bank.draw_negatives(torch.device("cpu")) for _ in range(40)])  # [40, 1000]
    assert not torch.equal(draws[0], draws[1])
    counts = torch.bincount(draws.flatten(), minlength=20).float()  # expected 2000 each
    chi2 = ((counts - 2000.0) ** 2 / 2000.0).sum()
    assert chi2 < 45.3  # 99.9% quantile of chi-square with 19 degrees of freedom
    assert int(bank.draws) == 40


def test_bank_state_survives_a_checkpoint_round_trip_exactly():
    bank = make_bank(num_samples=40, dim=4, num_negatives=5, seed=1)
    for step in range(3):
        bank.score(DotCritic(), torch.randn(4, 4), torch.randn(4, 4))
        bank.update(torch.randn(4, 4), torch.arange(4) + 4 * step)
    restored = make_bank(num_samples=40, dim=4, num_negatives=5, seed=99)  # different bank and seed
    restored.load_state_dict(round_trip(bank.state_dict()))
    assert torch.equal(restored.bank, bank.bank) and int(restored.draws) == 3
    for _ in range(2):  # and both continue identically
        assert torch.equal(restored.draw_negatives(torch.device("cpu")), bank.draw_negatives(torch.device("cpu")))
        key = torch.randn(4, 4)
        restored.update(key, torch.tensor([0, 9, 17, 33]))
        bank.update(key, torch.tensor([0, 9, 17, 33]))
    assert torch.equal(restored.bank, bank.bank)


def test_queue_state_survives_a_checkpoint_round_trip_exactly():
    torch.manual_seed(0)
    queue = MomentumQueue(size=7)
    queue.setup(3)
    queue.update(torch.randn(5, 3))
    queue.update(torch.randn(5, 3))  # wrapped: pointer 3
    restored = MomentumQueue(size=7)
    restored.setup(3)
    restored.load_state_dict(round_trip(queue.state_dict()))
    assert torch.equal(restored.keys, queue.keys) and int(restored.pointer) == 3
    key = torch.randn(5, 3)
    restored.update(key)
    queue.update(key)
    assert torch.equal(restored.keys, queue.keys) and int(restored.pointer) == int(queue.pointer) == 1
