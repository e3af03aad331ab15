"""Conformance kit: the checks every component must pass, for plugin packages' own tests.

    from selfsup.testing import check_estimator, plugin_registry, run_conformance

    def test_my_estimator():
        check_estimator(MyEstimator(clip=5.0))            # one instance, by hand

    def test_everything_my_plugin_registers():
        registry = plugin_registry(my_package.selfsup_plugin)   # no install needed
        for result in run_conformance(registry, package="my_package"):
            assert result.status != "fail", result

Each ``check_*`` function is plain Python (no pytest needed) and raises :class:`AssertionError`
with a message saying what was expected and what came back:

* :func:`check_encoder` — ``Features.global_`` is ``[N, out_dim]``, ``local`` is
  ``[N, local_channels, H, W]`` exactly when ``local_channels`` is declared, gradients flow,
  batch size 1 works and eval mode does not mix samples.
* :func:`check_critic` — ``[N, M]`` finite scores, differentiable in query and keys,
  ``pair`` equals the diagonal of ``forward``, ``similarity`` honours ``higher_is_similar``.
* :func:`check_estimator` — finite scalar loss and estimate, differentiable; batch size 1;
  scores of magnitude 1e4 without overflow; an ``is_lower_bound`` estimator stays below the
  true MI (plus a small tolerance) on two known cases (independent inputs: MI 0; correlated
  Gaussians scored by the optimal critic: MI = -log(1 - rho^2) / 2).
* :func:`check_sampler` — after ``setup`` and a few ``update`` calls, ``state_dict`` saved and
  loaded (``torch.load(weights_only=True)``) into a fresh sampler reproduces the state and
  the scores exactly.
* :func:`check_prior` — finite differentiable encoder loss; ``discriminator_step`` returns
  finite logs and changes the discriminator's parameters.
* :func:`check_transform` — ``num_views`` finite views in [0, 1], reproducible from the generator.
* :func:`check_logger` — a metrics sink opens, takes training and evaluation rows, closes,
  reopens to resume, and writes nothing outside the run folder.
* :func:`check_objective` — one CPU training step: finite loss, trainable parameters (the
  encoder's among them) change, ``embed`` returns ``[N, D]``.

For the registry-wide run (:func:`check_component`, :func:`run_conformance`, ``selfsup
plugins check``) components are built from the registry by :func:`build_for_conformance` with
:data:`CONTEXT` filling the data parameters and :data:`DEFAULT_PARTS` filling required part
parameters. A component that needs other arguments declares them in an optional
``conformance_params`` attribute (class attribute, or function attribute for a function
factory) in pipeline form, e.g. ``conformance_params = {"dim": 8}``; context keys set there
(``image_size: 32``) also shape the dummy input. ``conformance_params = "reason"`` (a string)
opts the component out of the registry-wide run; test it with the ``check_*`` functions and
your own inputs instead. The registry-wide run seeds torch, restores the caller's RNG state
afterwards and uses one thread (the inputs are tiny).

:func:`run_distributed_conformance` (also part of ``selfsup plugins check``; ``--no-distributed``
skips it) takes one training step of each objective on 2 gloo processes, each with half the
kit's batch and wrapped as the engine wraps it (DDP), and checks that loss and gradients equal
one process's on the whole batch with its batch norms split in two
(:class:`~selfsup.distributed.SplitBatchNorm`): batch statistics and in-batch negatives must
come from the global batch (:func:`selfsup.distributed.gather_with_grad`). Random draws inside
``forward`` must be made on rank 0 and broadcast (both sides are seeded alike); an objective
that cannot be checked this way declares ``distributed_conformance = "reason"``.
:func:`run_on_gloo` runs any function on spawned gloo processes, for plugins' own tests.
"""

from __future__ import annotations

from .checks import (
    BATCH_SIZE, BOUND_TOLERANCE, CONTEXT, DEFAULT_PARTS, FEATURE_DIM, LARGE_SCORE, check_critic, check_encoder,
    check_estimator, check_head, check_logger, check_objective, check_prior, check_sampler, check_transform, known_case_scores,
    objective_batch,
)
from .conformance import (
    CHECKED_KINDS, ConformanceResult, ConformanceSkip, build_for_conformance, check_component, conformance_params,
    format_results, normalize_package, plugin_registry, run_conformance,
)
from .distributed import (
    one_process_step, process_group_step, run_distributed_conformance, run_on_gloo,
)

__all__ = [
    "BATCH_SIZE", "BOUND_TOLERANCE", "CHECKED_KINDS", "CONTEXT", "DEFAULT_PARTS", "FEATURE_DIM", "LARGE_SCORE",
    "ConformanceResult", "ConformanceSkip", "build_for_conformance", "check_component", "check_critic",
    "check_encoder", "check_estimator", "check_head", "check_logger", "check_objective", "check_prior", "check_sampler", "check_transform",
    "conformance_params", "format_results", "known_case_scores", "normalize_package", "objective_batch",
    "one_process_step", "plugin_registry", "process_group_step", "run_conformance", "run_distributed_conformance",
    "run_on_gloo",
]
