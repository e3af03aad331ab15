"""Any sampler with any estimator, from config alone: 3 samplers x 4 estimators on a toy problem."""

from __future__ import annotations

import pytest
import torch

from selfsup.config import build
from selfsup.interfaces import Batch

SAMPLERS = {
    "in_batch": {"name": "in_batch"},
    "momentum_queue": {"name": "momentum_queue", "size": 48},  # not a multiple of the batch
    "memory_bank": {"name": "memory_bank", "num_negatives": 64, "momentum": 0.5},
}
ESTIMATORS = ["infonce", "jsd", "dv", "nwj"]
NUM_TRAIN = 96


@pytest.fixture(scope="module")
def toy_views(registry):
    """Three fixed batches of 32 digits (of a 96-sample training set), two augmented views each."""
    data = build(registry, "dataset", {"name": "digits"}, "data.dataset")
    augment = build(registry, "transform", {"name": "two_view"}, "data.augment")
    generator = torch.Generator().manual_seed(0)
    images = data.train.as_float()[:NUM_TRAIN]
    batches = []
    for start in range(0, NUM_TRAIN, 32):
        x = images[start : start + 32]
        batches.append(Batch(inputs=x, views=augment(x, 2, generator), index=torch.arange(start, start + 32)))
    return data, batches


@pytest.fixture
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny steps: more threads only contend
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_trains_with_every_estimator(registry, toy_views, one_thread, sampler, estimator):
    data, batches = toy_views
    torch.manual_seed(0)
    node = {
        "name": "moco",
        "encoder": {"name": "small_conv", "width": 4},
        "critic": {"name": "dot", "temperature": 0.5},
        "estimator": {"name": estimator},
        "sampler": SAMPLERS[sampler],
        "embedding_dim": 16,
        "momentum": 0.9,
    }
    context = {**data.context(), "num_train": NUM_TRAIN}  # what the engine fills from the data
    objective = build(registry, "objective", node, "objective", context=context)
    with torch.no_grad():  # fill queue / bank with real keys first, so the task does not get harder
        for _ in range(2):
            for batch in batches:
                objective(batch)
                objective.after_step(0, 24)  # same weights: the momentum update changes nothing
    optimizer = torch.optim.Adam(objective.parameter_groups(), lr=3e-3)
    losses = []
    for step in range(24):
        out = objective(batches[step % len(batches)])
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        objective.after_step(step, 24)
        losses.append(out.loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    first, last = sum(losses[:6]) / 6, sum(losses[-6:]) / 6  # a full pass over the 3 batches, twice
    assert last < first - 0.2, f"{sampler} x {estimator}: {first:.4f} -> {last:.4f}"
