"""The per-component checks of the conformance kit (see :mod:`selfsup.testing`).

Each ``check_*`` function raises :class:`AssertionError` with a message saying what was
expected and what came back; none needs pytest. Dummy inputs are tiny (8x8 grey images,
8-d features, batches of 8), so a check takes milliseconds.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..interfaces import ViewTransform
from ..interfaces import (
    Batch, Critic, Encoder, Estimate, Features, Head, MetricsLogger, MIEstimator, NegativeSampler, Objective,
    PriorMatcher, Scores, StepOutput,
)

#: Data parameters the kit fills in (as a pipeline's dataset would): 8x8 grey images, 10 classes.
CONTEXT: dict[str, int] = {"in_channels": 1, "image_size": 8, "num_classes": 10, "num_train": 64}
#: Width D of the dummy features given to critics, samplers and priors.
FEATURE_DIM = 8
#: Batch size of the dummy batches (large enough for batch norm and in-batch negatives).
BATCH_SIZE = 8
#: Required part parameters the component does not set get these small defaults.
DEFAULT_PARTS: dict[str, dict[str, Any]] = {
    "encoder": {"name": "small_conv", "width": 4},
    "critic": {"name": "dot"},
    "estimator": {"name": "infonce"},
    "sampler": {"name": "in_batch"},
}
#: Magnitude of the scores in the overflow checks.
LARGE_SCORE = 1e4
#: How far above the true MI a lower-bound estimate may land on the known cases (sampling noise).
BOUND_TOLERANCE = 0.15


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def _expect_finite(t: Tensor, what: str) -> None:
    _expect(torch.is_tensor(t), f"{what} must be a tensor, got {type(t).__name__}")
    _expect(bool(torch.isfinite(t).all()), f"{what} is not finite: {t.detach().flatten()[:6].tolist()}")


def _shape(t: Tensor | None) -> tuple[int, ...] | None:
    return None if t is None else tuple(t.shape)


# --------------------------------------------------------------------------- encoder
def check_encoder(encoder: Encoder, input_shape: tuple[int, ...] = (1, 8, 8), batch_size: int = 4) -> None:
    """Declared shapes, gradients, batch size 1 and sample independence in eval mode.

    input_shape: one sample's shape ``(C, H, W)``; the encoder gets ``[batch_size, C, H, W]``.
    """
    name = type(encoder).__name__
    out_dim = getattr(encoder, "out_dim", None)
    _expect(isinstance(out_dim, int) and out_dim > 0, f"{name}.out_dim must be a positive int, got {out_dim!r}")
    local_channels = getattr(encoder, "local_channels", None)
    x = torch.rand(batch_size, *input_shape)
    encoder.train()
    features = encoder(x)
    _expect(isinstance(features, Features), f"{name}.forward must return Features, got {type(features).__name__}")
    _expect(_shape(features.global_) == (batch_size, out_dim),
            f"{name}: Features.global_ should be [N, out_dim] = {(batch_size, out_dim)}, "
            f"got {_shape(features.global_)}")
    _expect_finite(features.global_, f"{name}: Features.global_")
    if local_channels is None:
        _expect(features.local is None, f"{name} returns a local map {_shape(features.local)} but declares "
                "local_channels = None; set local_channels to its channel count")
    else:
        local = features.local
        _expect(local is not None and local.dim() == 4 and tuple(local.shape[:2]) == (batch_size, local_channels),
                f"{name}: Features.local should be [N, local_channels, H, W] with N={batch_size}, "
                f"local_channels={local_channels}, got {_shape(local)}")
        _expect_finite(local, f"{name}: Features.local")
    # a random linear read-out, so outputs that sum to a constant still get gradients
    total = (features.global_ * torch.randn_like(features.global_)).sum()
    if features.local is not None:
        total = total + (features.local * torch.randn_like(features.local)).sum()
    params = [p for p in encoder.parameters() if p.requires_grad]
    if params:
        total.backward()
        grads = [p.grad for p in params if p.grad is not None]
        _expect(bool(grads) and any(bool(g.abs().sum() > 0) for g in grads),
                f"{name}: no gradient reaches the encoder's parameters from Features.global_/local")
        _expect(all(bool(torch.isfinite(g).all()) for g in grads), f"{name}: non-finite parameter gradients")
    encoder.eval()
    with torch.no_grad():
        single = encoder(x[:1]).global_
        pair = encoder(x[:2]).global_
    _expect(_shape(single) == (1, out_dim),
            f"{name}: batch size 1 in eval mode gave {_shape(single)}, expected (1, {out_dim})")
    _expect(torch.allclose(single[0], pair[0], rtol=1e-4, atol=1e-5),
            f"{name}: in eval mode a sample's embedding depends on the rest of the batch "
            f"(max difference {float((single[0] - pair[0]).abs().max()):.3g})")


# --------------------------------------------------------------------------- critic
def check_critic(critic: Critic, dim: int = FEATURE_DIM, num_queries: int = 5, num_keys: int = 7) -> None:
    """``[N, M]`` finite scores, gradients to both inputs, ``pair`` = diagonal, ``similarity``
    sign; ``pair`` finite with finite gradients at identical and antipodal inputs, in float32
    and under bf16 / fp16 autocast."""
    name = type(critic).__name__
    query = torch.randn(num_queries, dim, requires_grad=True)
    keys = torch.randn(num_keys, dim, requires_grad=True)
    scores = critic(query, keys)
    _expect(_shape(scores) == (num_queries, num_keys),
            f"{name}(query [N, D], keys [M, D]) should be [N, M] = {(num_queries, num_keys)}, got {_shape(scores)}")
    _expect_finite(scores, f"{name} scores")
    (scores * torch.randn_like(scores)).sum().backward()  # random read-out: row-normalised scores have gradients too
    for tensor, what in ((query, "query"), (keys, "keys")):
        _expect(tensor.grad is not None and bool(tensor.grad.abs().sum() > 0),
                f"{name}: the scores are not differentiable with respect to the {what}")
        _expect_finite(tensor.grad, f"{name}: gradient with respect to the {what}")
    with torch.no_grad():
        aligned = keys[:num_queries]
        pair, full = critic.pair(query, aligned), critic(query, aligned)
        _expect(_shape(pair) == (num_queries,),
                f"{name}.pair(query [N, D], key [N, D]) should be [N], got {_shape(pair)}")
        _expect(torch.allclose(pair, torch.diagonal(full), rtol=1e-4, atol=1e-5),
                f"{name}.pair disagrees with the diagonal of forward: {pair.tolist()} vs "
                f"{torch.diagonal(full).tolist()}")
        sign = 1.0 if critic.higher_is_similar else -1.0
        _expect(torch.allclose(critic.similarity(query, keys), sign * critic(query, keys), rtol=1e-4, atol=1e-5),
                f"{name}.similarity is not forward times {sign:+.0f} (higher_is_similar={critic.higher_is_similar})")
    _check_pair_extremes(critic, dim)


def _check_pair_extremes(critic: Critic, dim: int, batch: int = 4) -> None:
    """``pair`` at identical and at antipodal vectors has finite values and gradients, in
    float32 and under bf16 and fp16 autocast (where collapse and its opposite put them)."""
    name = type(critic).__name__
    base = torch.randn(batch, dim)
    for case, other in (("identical", base.clone()), ("antipodal", -base)):
        for dtype in (None, torch.bfloat16, torch.float16):
            a, b = base.clone().requires_grad_(), other.clone().requires_grad_()
            with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                scores = critic.pair(a, b)
            where = f"{name}.pair at {case} inputs" + (f" under {dtype} autocast" if dtype else "")
            _expect_finite(scores, where)
            scores.float().sum().backward()
            for tensor in (a, b):
                _expect(tensor.grad is not None, f"{where}: no gradient")
                _expect_finite(tensor.grad, f"{where}: gradient")


class _KitDotCritic(Critic):
    """Plain dot product ``q . k``: the critic the sampler check scores with."""

    def forward(self, query: Tensor, keys: Tensor) -> Tensor:
        return query @ keys.T  # [N, D] x [D, M] -> [N, M]


# --------------------------------------------------------------------------- estimator
def known_case_scores(
    rho: float, num_queries: int = 1024, num_negatives: int = 128, seed: int = 0
) -> tuple[Scores, float]:
    """Scores with a known MI, and that MI in nats.

    x, y are standard normals with correlation ``rho``. ``rho > 0``: the optimal critic
    ``f(x, y) = log p(y | x) / p(y)`` scores the pairs; MI = -log(1 - rho^2) / 2. ``rho == 0``
    (independent inputs): the critic ``f(x, y) = x y / 2`` scores them; MI = 0. Positives
    ``[num_queries, 1]`` score ``(x_i, y_i)``; negatives ``[num_queries, num_negatives]`` score
    ``(x_i, y_j)`` with y_j taken from the next rows, independent of x_i.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(num_queries, generator=g)
    y = rho * x + math.sqrt(1.0 - rho * rho) * torch.randn(num_queries, generator=g)
    if rho == 0.0:
        def critic(a: Tensor, b: Tensor) -> Tensor:
            return 0.5 * a * b
    else:
        def critic(a: Tensor, b: Tensor) -> Tensor:
            var = 1.0 - rho * rho
            return -0.5 * math.log(var) - (b - rho * a) ** 2 / (2.0 * var) + b**2 / 2.0
    shifts = (torch.arange(num_queries)[:, None] + torch.arange(1, num_negatives + 1)[None]) % num_queries
    scores = Scores(critic(x, y)[:, None], critic(x[:, None], y[shifts]))
    return scores, -0.5 * math.log(1.0 - rho * rho)


def _run_estimator(estimator: MIEstimator, scores: Scores, what: str) -> Estimate:
    name = type(estimator).__name__
    estimate = estimator(scores)
    _expect(isinstance(estimate, Estimate), f"{name} must return Estimate, got {type(estimate).__name__}")
    for value, label in ((estimate.loss, "loss"), (estimate.mi, "MI estimate")):
        _expect(torch.is_tensor(value) and value.dim() == 0, f"{name}: the {label} must be a scalar tensor ({what})")
        _expect_finite(value, f"{name}: the {label} ({what})")
    return estimate


def check_estimator(estimator: MIEstimator, num_negatives: int = 16) -> None:
    """Finite, differentiable, batch size 1, magnitudes of 1e4, and its bound on known cases."""
    name = type(estimator).__name__
    estimator.train()
    g = torch.Generator().manual_seed(0)
    k = num_negatives if estimator.needs_negatives else 0

    def scores(n: int, scale: float = 1.0, requires_grad: bool = False) -> Scores:
        pos = (scale * torch.randn(n, 1, generator=g)).requires_grad_(requires_grad)
        neg = (scale * torch.randn(n, k, generator=g)).requires_grad_(requires_grad) if k else None
        return Scores(pos, neg)

    s = scores(BATCH_SIZE, requires_grad=True)
    estimate = _run_estimator(estimator, s, "random scores")
    _expect(estimate.loss.requires_grad, f"{name}: the loss does not depend on the scores (no gradient)")
    estimate.loss.backward()
    _expect(s.positive.grad is not None and bool(s.positive.grad.abs().sum() > 0),
            f"{name}: the loss has no gradient with respect to the positive scores")
    _expect_finite(s.positive.grad, f"{name}: gradient with respect to the positive scores")
    _run_estimator(estimator, scores(1), "batch size 1")
    n = BATCH_SIZE
    sign = torch.where(torch.arange(n * max(k, 1)) % 2 == 0, 1.0, -1.0).view(n, max(k, 1))
    separated = Scores(torch.full((n, 1), LARGE_SCORE), -LARGE_SCORE * torch.ones(n, k) if k else None)
    reversed_ = Scores(torch.full((n, 1), -LARGE_SCORE), (LARGE_SCORE * (sign - 1) / 2)[:, :k] if k else None)
    _run_estimator(estimator, separated, f"positives +{LARGE_SCORE:g}, negatives -{LARGE_SCORE:g}")
    _run_estimator(estimator, reversed_, f"positives -{LARGE_SCORE:g}, negatives 0 or -{LARGE_SCORE:g}")
    if estimator.is_lower_bound and estimator.needs_negatives:
        estimator.eval()
        for rho in (0.0, 0.8):
            case, true_mi = known_case_scores(rho)
            with torch.no_grad():
                mi = float(_run_estimator(estimator, case, f"known case rho={rho}").mi)
            _expect(mi <= true_mi + BOUND_TOLERANCE,
                    f"{name} declares is_lower_bound but estimates {mi:.4f} nats where the true MI is "
                    f"{true_mi:.4f} ({'independent inputs' if rho == 0 else f'Gaussians, rho={rho}'})")
        estimator.train()


# --------------------------------------------------------------------------- sampler
def check_sampler(
    make_sampler: Callable[[], NegativeSampler],
    dim: int = FEATURE_DIM,
    num_samples: int = CONTEXT["num_train"],
    batch_size: int = 6,
    updates: int = 3,
) -> None:
    """Scores from the sampler, then an exact ``state_dict`` round trip into a fresh one.

    make_sampler: builds a fresh sampler (called twice). Both get ``setup(dim, num_samples)``.
    """
    sampler = make_sampler()
    name = type(sampler).__name__
    critic = _KitDotCritic()
    sampler.setup(dim, num_samples)
    g = torch.Generator().manual_seed(0)

    def step_inputs() -> tuple[Tensor, Tensor, Tensor]:
        query = nn.functional.normalize(torch.randn(batch_size, dim, generator=g), dim=1)
        key = nn.functional.normalize(query + 0.1 * torch.randn(batch_size, dim, generator=g), dim=1)
        return query, key, torch.randperm(num_samples, generator=g)[:batch_size]

    for _ in range(updates):
        query, key, index = step_inputs()
        scores = sampler.score(critic, query, key, index)
        _expect(isinstance(scores, Scores), f"{name}.score must return Scores, got {type(scores).__name__}")
        _expect(scores.positive.shape[0] == batch_size,
                f"{name}: Scores.positive has {scores.positive.shape[0]} rows for {batch_size} queries")
        _expect_finite(scores.positive, f"{name}: positive scores")
        if scores.negative is not None:
            _expect_finite(scores.negative, f"{name}: negative scores")
        sampler.update(key, index)
    buffer = io.BytesIO()
    torch.save(sampler.state_dict(), buffer)
    buffer.seek(0)
    fresh = make_sampler()
    fresh.setup(dim, num_samples)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    original_state, restored_state = sampler.state_dict(), fresh.state_dict()
    _expect(original_state.keys() == restored_state.keys(),
            f"{name}: state_dict keys differ after loading: {sorted(original_state)} vs {sorted(restored_state)}")
    for key_name, value in original_state.items():
        _expect(torch.equal(value, restored_state[key_name]),
                f"{name}: state {key_name!r} differs after the round trip")
    query, key, index = step_inputs()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        expected = sampler.score(critic, query, key, index)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        got = fresh.score(critic, query, key, index)
    _expect(torch.equal(expected.positive, got.positive) and _same(expected.negative, got.negative),
            f"{name}: a sampler restored from state_dict scores differently from the original")


def _same(a: Tensor | None, b: Tensor | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))


# --------------------------------------------------------------------------- prior
def check_prior(prior: PriorMatcher, dim: int = FEATURE_DIM, batch_size: int = 16) -> None:
    """Finite differentiable encoder loss; ``discriminator_step`` returns finite logs and learns."""
    name = type(prior).__name__
    codes = torch.rand(batch_size, dim, requires_grad=True)
    loss = prior.encoder_loss(codes)
    _expect(torch.is_tensor(loss) and loss.dim() == 0, f"{name}.encoder_loss must return a scalar tensor")
    _expect_finite(loss, f"{name}.encoder_loss")
    loss.backward()
    _expect(codes.grad is not None and bool(codes.grad.abs().sum() > 0),
            f"{name}.encoder_loss has no gradient to the codes")
    before = [p.detach().clone() for p in prior.parameters()]
    logs = prior.discriminator_step(codes.detach())
    _expect(isinstance(logs, Mapping),
            f"{name}.discriminator_step must return a mapping of logs, got {type(logs).__name__}")
    for key, value in logs.items():
        _expect(math.isfinite(float(value)), f"{name}.discriminator_step log {key!r} is not finite: {value!r}")
    _expect(any(not torch.equal(b, p.detach()) for b, p in zip(before, prior.parameters())),
            f"{name}.discriminator_step did not change the discriminator's parameters")


# --------------------------------------------------------------------------- transform
def check_transform(transform: ViewTransform, input_shape: tuple[int, ...] = (1, 8, 8), batch_size: int = 4) -> None:
    """Views shaped like the batch, finite, in [0, 1], and reproducible from the generator."""
    name = type(transform).__name__
    images = torch.rand(batch_size, *input_shape)
    views = transform(images, 2, torch.Generator().manual_seed(0))
    _expect(isinstance(views, (list, tuple)) and len(views) == 2, f"{name}(images, 2, generator) must return 2 views")
    again = transform(images, 2, torch.Generator().manual_seed(0))
    for i, (view, repeat) in enumerate(zip(views, again)):
        _expect(_shape(view) == tuple(images.shape),
                f"{name}: view {i} is {_shape(view)}, expected {tuple(images.shape)}")
        _expect_finite(view, f"{name}: view {i}")
        _expect(bool((view >= -1e-6).all() and (view <= 1 + 1e-6).all()), f"{name}: view {i} leaves [0, 1]")
        _expect(torch.equal(view, repeat), f"{name}: view {i} differs between two calls with the same generator seed")


# --------------------------------------------------------------------------- objective
def objective_batch(num_views: int, input_shape: tuple[int, ...] = (1, 8, 8), batch_size: int = BATCH_SIZE,
                    num_classes: int = CONTEXT["num_classes"], num_train: int = CONTEXT["num_train"]) -> Batch:
    """The kit's training batch: images ``[batch_size, *input_shape]`` in [0, 1], ``num_views``
    noisy copies, labels ``[batch_size]`` and training-set indices ``[batch_size]`` (fixed seed)."""
    g = torch.Generator().manual_seed(0)
    inputs = torch.rand(batch_size, *input_shape, generator=g)
    views = [(inputs + 0.05 * torch.randn(inputs.shape, generator=g)).clamp(0, 1) for _ in range(num_views)]
    labels = torch.arange(batch_size) % num_classes
    return Batch(inputs, views, labels, torch.randperm(num_train, generator=g)[:batch_size])


def check_objective(objective: Objective, input_shape: tuple[int, ...] = (1, 8, 8), batch_size: int = BATCH_SIZE,
                    num_classes: int = CONTEXT["num_classes"], num_train: int = CONTEXT["num_train"]) -> None:
    """One CPU training step: finite loss and logs, trainable parameters (the encoder's) change."""
    name = type(objective).__name__
    batch = objective_batch(objective.num_views, input_shape, batch_size, num_classes, num_train)
    inputs = batch.inputs
    groups = objective.parameter_groups()
    params = [p for group in groups for p in group["params"]]
    _expect(bool(params), f"{name}.parameter_groups() holds no trainable parameters")
    _expect(all(p.requires_grad for p in params),
            f"{name}.parameter_groups() holds parameters with requires_grad=False")
    _expect(len({id(p) for p in params}) == len(params), f"{name}.parameter_groups() lists a parameter twice")
    before = [p.detach().clone() for p in params]
    objective.train()
    out = objective(batch)
    _expect(isinstance(out, StepOutput), f"{name}.forward must return StepOutput, got {type(out).__name__}")
    _expect(torch.is_tensor(out.loss) and out.loss.dim() == 0 and out.loss.requires_grad,
            f"{name}: StepOutput.loss must be a scalar tensor with a gradient")
    _expect_finite(out.loss, f"{name}: loss")
    for key, value in out.logs.items():
        _expect(math.isfinite(float(value)), f"{name}: log {key!r} is not finite: {value!r}")
    for p in params:
        p.grad = None
    out.loss.backward()
    with torch.no_grad():  # one plain SGD step (torch.optim's first use costs seconds of imports)
        for p in params:
            if p.grad is not None:
                p.sub_(0.1 * p.grad)
    objective.after_step(0, 10)
    changed = {id(p) for b, p in zip(before, params) if not torch.equal(b, p.detach())}
    _expect(bool(changed), f"{name}: one training step changed none of the {len(params)} trainable parameters")
    encoder = getattr(objective, "encoder", None)
    if isinstance(encoder, nn.Module) and any(id(p) in {id(q) for q in params} for p in encoder.parameters()):
        _expect(any(id(p) in changed for p in encoder.parameters()),
                f"{name}: one training step left the encoder unchanged")
    objective.eval()
    with torch.no_grad():
        embedding = objective.embed(inputs)
    _expect(torch.is_tensor(embedding) and embedding.dim() == 2 and embedding.shape[0] == batch_size,
            f"{name}.embed(x) should be [N, D] with N={batch_size}, got {_shape(embedding)}")
    _expect_finite(embedding, f"{name}.embed(x)")




def check_logger(logger: MetricsLogger) -> None:
    """A metrics sink takes a run's life: open in a fresh folder, training and evaluation rows
    (with columns that differ), close; then open again with ``resume=True``, one more row, close.
    Checks that nothing raises and that it writes only inside the run folder."""
    import tempfile
    from pathlib import Path

    name = type(logger).__name__
    _expect(isinstance(logger, MetricsLogger), f"{name} must subclass selfsup.interfaces.MetricsLogger")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run_dir = root / "run"
        run_dir.mkdir()
        config = {"seed": 0, "objective": {"name": "moco"}}
        logger.open(run_dir, config, False)
        logger.log({"step": 10, "epoch": 0.5, "train_seconds": 1.5, "lr": 0.1, "loss": 2.0, "images_per_s": 900.0},
                   "train")
        logger.log({"step": 20, "epoch": 1.0, "train_seconds": 3.0, "knn_acc": 0.8, "eval_seconds": 0.2}, "eval")
        logger.close()
        logger.open(run_dir, config, True)
        logger.log({"step": 30, "epoch": 1.5, "train_seconds": 4.5, "lr": 0.05, "loss": 1.5, "images_per_s": 950.0},
                   "train")
        logger.close()
        stray = [p.name for p in root.iterdir() if p != run_dir]
        _expect(not stray, f"{name} wrote outside the run folder: {stray}")


def check_head(head: Head, in_dim: int = FEATURE_DIM, batch_size: int = BATCH_SIZE) -> None:
    """A head builds a module ``[N, in_dim] -> [N, out_dim]`` for any ``in_dim``: finite output,
    gradients to its input and its parameters, and a second build is a fresh module."""
    name = type(head).__name__
    _expect(isinstance(getattr(head, "out_dim", None), int) and head.out_dim > 0,
            f"{name}.out_dim must be a positive int, got {getattr(head, 'out_dim', None)!r}")
    for width in (in_dim, in_dim + 3):
        module = head.build(width)
        _expect(isinstance(module, nn.Module), f"{name}.build must return an nn.Module, got {type(module).__name__}")
        x = torch.randn(batch_size, width, requires_grad=True)
        module.train()
        y = module(x)
        _expect(torch.is_tensor(y) and tuple(y.shape) == (batch_size, head.out_dim),
                f"{name}.build({width}) maps [{batch_size}, {width}] to {_shape(y)}, expected [{batch_size}, {head.out_dim}]")
        _expect_finite(y, f"{name} output")
        y.square().sum().backward()
        _expect(x.grad is not None and bool(torch.isfinite(x.grad).all()), f"{name}: no finite gradient to the input")
    _expect(head.build(in_dim) is not head.build(in_dim), f"{name}.build must return a new module on each call")
