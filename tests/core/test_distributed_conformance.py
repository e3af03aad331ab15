"""The distributed conformance check (selfsup.testing.run_distributed_conformance): one step on
2 gloo processes against one process on the whole batch, for every objective of the registry.

One launch of the 2 workers checks every built-in objective, variants registered here the way
a third-party package registers its own (Barlow Twins and VICReg with ``sync_bn`` projectors,
DIM with global and local terms, a prior, batch norm in its global critic and the
Donsker-Varadhan estimator), and a
deliberately wrong objective, which must fail: the check can tell a per-process batch
statistic from a global one.
"""

from __future__ import annotations

import pytest
import torch

from selfsup.cli import main
from selfsup.interfaces import Batch, Encoder, StepOutput
from selfsup.plugin_manager import load_registry
from selfsup.plugins.common.estimators import DonskerVaradhan
from selfsup.plugins.dim.critics import ConcatCritic, SeparableCritic
from selfsup.plugins.dim.objective import DeepInfoMax
from selfsup.plugins.noncontrastive.barlow_twins import BarlowTwins, barlow_twins_loss
from selfsup.plugins.noncontrastive.vicreg import VICReg
from selfsup.testing import ConformanceResult, ConformanceSkip, check_component
from selfsup.testing.distributed import compare, reference_step, run_distributed_conformance, shard


# --------------------------------------------------------------------------- objectives under test
class PerShardBarlowTwins(BarlowTwins):
    """Wrong under torch.distributed: standardises and correlates each process's shard alone."""

    def forward(self, batch: Batch) -> StepOutput:
        view1, view2 = self.two_views(batch)
        z1, z2 = self.projector(self.encoder(view1).global_), self.projector(self.encoder(view2).global_)
        return StepOutput(loss=barlow_twins_loss(z1, z2, self.lambda_offdiag).loss, logs={})


def barlow_twins_sync_bn(encoder: Encoder, embedding_dim: int = 8) -> BarlowTwins:
    """Barlow Twins whose projector normalises with the global batch's statistics."""
    return BarlowTwins(encoder, embedding_dim=embedding_dim, projector_hidden_dim=8, sync_bn=True)


def vicreg_sync_bn(encoder: Encoder, embedding_dim: int = 8) -> VICReg:
    """VICReg whose projector normalises with the global batch's statistics."""
    return VICReg(encoder, embedding_dim=embedding_dim, projector_hidden_dim=8, sync_bn=True)


def dim_global_and_local(in_channels: int = 1, image_size: int = 32) -> DeepInfoMax:
    """DIM L+G (with the prior), cortex_DIM's masked same-image scores, BN in the global critic,
    and Donsker-Varadhan, whose log-mean-exp runs over the negatives of the whole batch at once."""
    return DeepInfoMax(preset="L+G", same_image="masked_constant", in_channels=in_channels, image_size=image_size,
                       local_critic=SeparableCritic(hidden_dim=16, embedding_dim=16),
                       global_critic=ConcatCritic(hidden_dim=16, batch_norm=True), estimator=DonskerVaradhan())


VARIANTS = {"per_shard_barlow_twins": PerShardBarlowTwins, "barlow_twins_sync_bn": barlow_twins_sync_bn,
            "vicreg_sync_bn": vicreg_sync_bn, "dim_global_and_local": dim_global_and_local}


@pytest.fixture(scope="module")
def rows() -> dict[str, ConformanceResult]:
    """The check's row for every objective: built-ins and the variants above (one launch)."""
    registry = load_registry(autoload=False).registry
    for name, factory in VARIANTS.items():
        registry.register("objective", name, factory)
    results = run_distributed_conformance(registry, timeout_s=300)
    assert [r.name for r in results] == registry.names("objective")  # one row each, in order
    return {r.name: r for r in results}


# --------------------------------------------------------------------------- the check
@pytest.mark.distributed
def test_every_builtin_objective_gives_the_one_process_step_on_two_processes(rows):
    builtins = [name for name, r in rows.items() if r.provider.startswith("selfsup ")]
    assert {"moco", "moco_v2", "moco_v3", "simclr", "byol", "simsiam", "barlow_twins", "vicreg", "dino",
            "dim"} <= set(builtins)
    for name in builtins:
        row = rows[name]
        assert row.kind == "objective" and row.detail.startswith("distributed: "), row
        if name == "pairwise_contrastive":  # multimodal batches: opted out of the image kit
            assert row.status == "skip" and "opted out" in row.detail
        else:
            assert row.status == "pass", f"{name}: {row.detail}"


@pytest.mark.distributed
@pytest.mark.parametrize("name", ["barlow_twins_sync_bn", "vicreg_sync_bn", "dim_global_and_local"])
def test_global_batch_variants_pass(rows, name):
    assert rows[name].status == "pass", rows[name].detail
    assert rows[name].provider == "local"  # registered outside the built-ins, and still checked


@pytest.mark.distributed
def test_a_per_process_batch_statistic_fails_the_check(rows):
    row = rows["per_shard_barlow_twins"]
    assert row.status == "fail"
    assert "on 2 processes but" in row.detail and "gather_with_grad" in row.detail


# --------------------------------------------------------------------------- pieces, in one process
def test_compare_accepts_rounding_and_names_what_differs():
    grads = {"a.weight": torch.tensor([1.0, -2.0]), "b.bias": torch.tensor([0.5])}
    assert compare((3.0, grads), (3.0 + 1e-6, {k: v + 1e-6 for k, v in grads.items()})) is None
    assert "loss 3.1 on 2 processes but 3 on 1" in compare((3.0, grads), (3.1, grads))
    skewed = {**grads, "b.bias": torch.tensor([0.51])}  # 0.01 off, largest entry 2: over 1e-4 * 2
    assert "gradient of b.bias differs by 0.01" in compare((3.0, grads), (3.0, skewed))
    assert "trainable parameters differ" in compare((3.0, grads), (3.0, {"a.weight": grads["a.weight"]}))


def test_shard_takes_contiguous_rows_of_every_tensor():
    batch = Batch(torch.arange(6.0).view(6, 1), [torch.arange(6.0) + 10], torch.arange(6) % 2, torch.arange(6) + 100)
    second = shard(batch, 1, 2)
    assert second.inputs.flatten().tolist() == [3.0, 4.0, 5.0] and second.views[0].tolist() == [13.0, 14.0, 15.0]
    assert second.labels.tolist() == [1, 0, 1] and second.index.tolist() == [103, 104, 105]
    with pytest.raises(ValueError, match="does not split into 4 equal shards"):
        shard(batch, 0, 4)


class NotChecked(BarlowTwins):
    """An objective that opts out of the distributed check only."""

    distributed_conformance = "draws its own per-process randomness"


def test_an_objective_can_opt_out_of_the_distributed_check_only():
    registry = load_registry(autoload=False).registry
    registry.register("objective", "not_checked", NotChecked)
    with pytest.raises(ConformanceSkip, match="per-process randomness"):
        reference_step(registry, "not_checked")
    assert check_component(registry, "objective", "not_checked").status == "pass"  # the one-process kit runs


# --------------------------------------------------------------------------- the command line
def test_plugins_check_adds_a_distributed_row_per_passing_objective(monkeypatch, capsys):
    """Wiring only (the check itself is tested above): objectives that pass in one process,
    and none with --no-distributed."""
    import selfsup.testing as kit

    def fake_kit(registry, package=None, kinds=None):
        return [ConformanceResult("objective", "good", "selfsup 0.1.0", "pass"),
                ConformanceResult("objective", "broken", "selfsup 0.1.0", "fail", "no"),
                ConformanceResult("critic", "dot", "selfsup 0.1.0", "pass")]

    asked: list[list[str]] = []

    def fake_distributed(registry, names):
        asked.append(list(names))
        return [ConformanceResult("objective", n, "selfsup 0.1.0", "pass", "distributed: fine") for n in names]

    monkeypatch.setattr(kit, "run_conformance", fake_kit)
    monkeypatch.setattr(kit, "run_distributed_conformance", fake_distributed)
    assert main(["plugins", "check", "selfsup", "--kind", "objective"]) == 1  # "broken" fails
    assert asked == [["good"]]
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "3 passed, 1 failed, 0 skipped" and "distributed: fine" in lines[-2]
    assert main(["plugins", "check", "selfsup", "--kind", "objective", "--no-distributed"]) == 1
    assert asked == [["good"]] and capsys.readouterr().out.splitlines()[-1] == "2 passed, 1 failed, 0 skipped"
