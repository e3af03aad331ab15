"""DINO: the teacher's centred, sharpened distribution, the loss over view pairs, the centre
and the teacher's momentum, all against hand computations; a digits run beats random init."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from support import tiny_pipeline

from selfsup.engine import build_trainer
from selfsup.errors import CollapseDetected
from selfsup.interfaces import Batch
from selfsup.plugins.encoders.conv import SmallConvNet
from selfsup.plugins.noncontrastive.dino import DINO, dino_loss, teacher_probabilities


def test_teacher_distribution_is_centred_then_sharpened():
    logits = torch.tensor([[2.0, 0.0, 1.0]])
    center = torch.tensor([[1.0, 0.0, 0.0]])
    q = teacher_probabilities(logits, center, temperature=0.5)
    expected = torch.softmax(torch.tensor([[1.0, 0.0, 1.0]]) / 0.5, dim=-1)  # (logits - c) / T
    assert torch.allclose(q, expected)
    assert torch.allclose(teacher_probabilities(logits, None, 1.0), torch.softmax(logits, -1))


def test_loss_averages_every_teacher_student_pair_but_the_same_view():
    torch.manual_seed(0)
    student = [torch.randn(4, 5) for _ in range(3)]  # 2 global + 1 local
    teacher = [torch.softmax(torch.randn(4, 5), -1) for _ in range(2)]
    by_hand = []
    for i, q in enumerate(teacher):
        for j, s in enumerate(student):
            if i != j:
                by_hand.append(-(q * F.log_softmax(s / 0.1, -1)).sum(-1).mean())
    assert len(by_hand) == 4  # (0,1), (0,2), (1,0), (1,2)
    terms = dino_loss(student, teacher, student_temperature=0.1)
    assert torch.allclose(terms.loss, torch.stack(by_hand).mean())
    # a uniform teacher against a uniform student: the loss is log K
    uniform = [torch.zeros(4, 5)] * 2
    assert dino_loss(uniform, [torch.full((4, 5), 0.2)] * 2, 0.1).loss.item() == pytest.approx(math.log(5))


def _dino(**kwargs) -> DINO:
    torch.manual_seed(0)
    return DINO(SmallConvNet(in_channels=1, image_size=8, width=4), out_dim=16, hidden_dim=16, bottleneck_dim=8,
                **kwargs)


def test_centre_is_an_ema_of_the_teacher_outputs_and_the_teacher_follows_by_momentum():
    dino = _dino(center_momentum=0.9, momentum=0.5)
    views = [torch.rand(6, 1, 8, 8) for _ in range(2)]
    with torch.no_grad():
        teacher_logits = torch.cat([dino.teacher_head(dino.teacher_encoder(v).global_) for v in views])
    out = dino(Batch(inputs=views[0], views=views))
    out.loss.backward()
    student = [p.detach().clone() for p in dino.encoder.parameters()]
    teacher = [p.detach().clone() for p in dino.teacher_encoder.parameters()]
    dino.after_step(0, 10)
    assert torch.allclose(dino.center, 0.1 * teacher_logits.mean(0, keepdim=True), atol=1e-6)
    m = 1 - (1 - 0.5) * (math.cos(0.0) + 1) / 2  # cosine_momentum at step 0 = base momentum
    for t, s, new in zip(teacher, student, dino.teacher_encoder.parameters()):
        assert torch.allclose(new, m * t + (1 - m) * s, atol=1e-6)
    assert int(dino.steps_done) == 1


def test_teacher_temperature_warms_up_and_the_switches_remove_centre_and_sharpening():
    dino = _dino(teacher_temperature=0.07, warmup_teacher_temperature=0.04, teacher_warmup_steps=10)
    assert dino.current_teacher_temperature() == pytest.approx(0.04)
    dino.steps_done.fill_(5)
    assert dino.current_teacher_temperature() == pytest.approx(0.055)
    dino.steps_done.fill_(20)
    assert dino.current_teacher_temperature() == pytest.approx(0.07)
    assert _dino(sharpening=False).current_teacher_temperature() == 0.1  # the student's
    flat = _dino(centering=False)
    views = [torch.rand(4, 1, 8, 8) for _ in range(2)]
    flat(Batch(inputs=views[0], views=views))
    flat.after_step(0, 10)
    assert torch.count_nonzero(flat.center) == 0  # no centre without centering


def test_multi_crop_views_feed_the_student_only(tmp_path, registry):
    cfg = tiny_pipeline(tmp_path, trainer__max_steps=2, data__batch_size=32)
    cfg["data"]["augment"] = {"name": "multi_crop", "local_size": 6}
    cfg["objective"] = {"name": "dino", "encoder": {"name": "small_conv", "width": 4}, "out_dim": 32,
                        "hidden_dim": 16, "bottleneck_dim": 8, "local_views": 2}
    trainer = build_trainer(OmegaConf.create(cfg), registry, run_dir=tmp_path / "run")
    assert trainer.objective.num_views == 4
    result = trainer.fit()
    assert result.steps == 2 and torch.count_nonzero(trainer.objective.center) > 0


@pytest.mark.slow
def test_dino_on_digits_beats_random_init(tmp_path, registry):
    """examples/dino_digits.yaml, its 30 epochs: kNN from about 82% at random init to about 91%."""
    cfg = OmegaConf.to_container(OmegaConf.load(Path(__file__).resolve().parents[3] / "examples" / "dino_digits.yaml"))
    cfg["trainer"].update(progress=False, out_dir=str(tmp_path), loggers=[])
    cfg["eval"] = {"linear_probe": False, "plots": False}
    result = build_trainer(OmegaConf.create(cfg), registry, run_dir=tmp_path / "run").fit()
    assert result.after["knn_acc"] > result.before["knn_acc"] + 0.05, (result.before, result.after)


@pytest.mark.slow
def test_monitor_flags_dino_without_centering_or_sharpening_and_not_dino(tmp_path, registry):
    """examples/dino_digits.yaml's monitor, up to 200 steps: no centering -> one distribution for every
    image (the logits' rank falls below 3); no sharpening -> the uniform distribution (normalised
    entropy above 0.999); the published recipe -> neither."""
    cfg = OmegaConf.to_container(OmegaConf.load(Path(__file__).resolve().parents[3] / "examples" / "dino_digits.yaml"))
    cfg["trainer"].update(progress=False, out_dir=str(tmp_path), loggers=[], epochs=None, max_steps=200, log_every=10,
                          eval_before=False, eval_after=False)
    cfg["monitor"].update(every=10, stop_on_collapse=True)  # a broken variant stops where it is flagged
    flagged = {}
    for variant, switch in (("dino", {}), ("no_centering", {"centering": False}), ("no_sharpening", {"sharpening": False})):
        run = OmegaConf.create({**cfg, "objective": {**cfg["objective"], **switch}})
        trainer = build_trainer(run, registry, run_dir=tmp_path / variant)
        try:
            trainer.fit()
        except CollapseDetected:
            assert trainer.global_step < 200
        flagged[variant] = trainer.monitor.collapse.key if trainer.monitor.collapse else None
    assert flagged == {"dino": None, "no_centering": "collapse_rank",
                       "no_sharpening": "collapse_above.softmax_entropy"}, flagged
