"""The component kinds: one declaration each, read by every place that needs one.

A :class:`Kind` names what its components implement (``interface``), whether a constructor
parameter annotated with that interface is built from a nested ``{name: ...}`` mapping
(``nested``: the parts), which class attributes ``selfsup plugins show`` prints (``traits``)
and how the conformance kit checks a registered component (``check``). The registry takes
its kinds and summaries from :data:`KINDS`, the pipeline builder its nested parts, the CLI
its traits, the kit its checks: adding a kind is adding one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .interfaces import (
    Critic, Diagnostic, Encoder, Head, MetricsLogger, MIEstimator, NegativeSampler, Objective, PriorMatcher,
    ViewTransform,
)

if TYPE_CHECKING:  # pragma: no cover
    from .registry import Registry

#: ``check(registry, name)``: build the component small and raise AssertionError when it fails.
Check = Callable[["Registry", str], None]


@dataclass(frozen=True)
class Kind:
    """One component kind (see the module docstring)."""

    name: str
    summary: str
    interface: type | None = None
    nested: bool = False
    traits: tuple[str, ...] = ()
    check: Check | None = None


# --------------------------------------------------------------------------- conformance checks
# Each builds the component as the kit does (selfsup.testing.conformance.build_for_conformance)
# and runs its kind's check from selfsup.testing.checks; imported on use (the kit needs torch
# tensors and the config builder, which registering a component does not).
def _check_encoder(registry: "Registry", name: str) -> None:
    from .testing.checks import check_encoder
    from .testing.conformance import build_for_conformance, input_shape

    encoder, context = build_for_conformance(registry, "encoder", name)
    check_encoder(encoder, input_shape(context))


def _check_critic(registry: "Registry", name: str) -> None:
    from .testing.checks import check_critic
    from .testing.conformance import build_for_conformance

    check_critic(build_for_conformance(registry, "critic", name)[0])


def _check_estimator(registry: "Registry", name: str) -> None:
    from .testing.checks import check_estimator
    from .testing.conformance import build_for_conformance

    check_estimator(build_for_conformance(registry, "estimator", name)[0])


def _check_sampler(registry: "Registry", name: str) -> None:
    from .testing.checks import check_sampler
    from .testing.conformance import build_for_conformance

    # built afresh on each call: the state_dict round trip loads into a new sampler
    check_sampler(lambda: build_for_conformance(registry, "sampler", name)[0])


def _check_prior(registry: "Registry", name: str) -> None:
    from .testing.checks import check_prior
    from .testing.conformance import build_for_conformance

    check_prior(build_for_conformance(registry, "prior", name)[0])


def _check_transform(registry: "Registry", name: str) -> None:
    from .testing.checks import check_transform
    from .testing.conformance import build_for_conformance, input_shape

    transform, context = build_for_conformance(registry, "transform", name)
    check_transform(transform, input_shape(context))


def _check_objective(registry: "Registry", name: str) -> None:
    from .testing.checks import check_objective
    from .testing.conformance import build_for_conformance, input_shape

    objective, context = build_for_conformance(registry, "objective", name)
    check_objective(objective, input_shape(context), num_classes=context["num_classes"],
                    num_train=context["num_train"])


def _check_head(registry: "Registry", name: str) -> None:
    from .testing.checks import check_head
    from .testing.conformance import build_for_conformance

    check_head(build_for_conformance(registry, "head", name)[0])


def _check_logger(registry: "Registry", name: str) -> None:
    from .testing.checks import check_logger
    from .testing.conformance import build_for_conformance

    check_logger(build_for_conformance(registry, "logger", name)[0])


# --------------------------------------------------------------------------- the table
KINDS: dict[str, Kind] = {kind.name: kind for kind in (
    Kind("encoder", "data -> Features(global vector, optional local map)", Encoder, nested=True,
         check=_check_encoder),
    Kind("critic", "scores pairs of representations", Critic, nested=True, traits=("higher_is_similar",),
         check=_check_critic),
    Kind("estimator", "positive/negative scores -> loss and MI estimate", MIEstimator, nested=True,
         traits=("needs_negatives", "is_lower_bound"), check=_check_estimator),
    Kind("sampler", "supplies negatives and builds Scores", NegativeSampler, nested=True, check=_check_sampler),
    Kind("prior", "adversarial prior matching", PriorMatcher, nested=True, check=_check_prior),
    Kind("head", "a projector or predictor: build(in_dim) -> module [N, in_dim] -> [N, out_dim]", Head, nested=True,
         check=_check_head),
    Kind("objective", "a bundle wiring parts into one training objective", Objective, nested=True,
         traits=("num_views", "needs_labels"), check=_check_objective),
    Kind("dataset", "loads train/test image arrays"),
    Kind("transform", "batch-wise augmentation producing views", ViewTransform, check=_check_transform),
    Kind("diagnostic", "measures embeddings (collapse, uniformity, rank)", Diagnostic,
         traits=("needs_views", "needs_labels")),
    Kind("benchmark", "a `selfsup bench NAME` command: main(argv) -> exit code"),
    Kind("logger", "a metrics sink for training and evaluation rows (trainer.loggers)", MetricsLogger,
         check=_check_logger),
)}

#: Interface of each part kind: a parameter annotated with one is built from ``{name: ...}``.
PART_KINDS: dict[str, type] = {k.name: k.interface for k in KINDS.values() if k.nested and k.interface}
#: The kinds the conformance kit checks; the others (dataset, diagnostic, benchmark) are skipped.
CHECKED_KINDS: tuple[str, ...] = tuple(k.name for k in KINDS.values() if k.check is not None)
