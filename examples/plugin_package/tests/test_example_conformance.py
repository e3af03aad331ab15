"""The package's components through selfsup's conformance kit, and its pipeline validated."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from selfsup.config import build
from selfsup.errors import ConfigError
from selfsup.testing import CONTEXT, check_estimator, format_results, plugin_registry, run_conformance

from selfsup_example_plugin import SmileContrast, plugin
from selfsup_example_plugin.smile import SMILE

PIPELINE = Path(__file__).resolve().parents[1] / "pipeline.yaml"


@pytest.fixture(scope="module")
def registry():
    return plugin_registry(plugin)  # selfsup's built-ins plus this plugin, without installing it


@pytest.mark.parametrize("estimator", [SMILE(), SMILE(clip=1.0, gradient="dv"), SMILE(clip=2.0, gradient="smile"),
                                       SMILE(clip=None)])
def test_smile_passes_the_estimator_checks(estimator):
    check_estimator(estimator)


def test_every_component_of_the_package_passes(registry):
    results = run_conformance(registry, package="selfsup_example_plugin")
    assert {(r.kind, r.name) for r in results} == {
        ("estimator", "smile"), ("objective", "smile_contrast"), ("logger", "best_metrics")}
    assert all(r.passed for r in results), format_results(results)


def test_pipeline_builds_with_registered_parts(registry):
    node = OmegaConf.to_container(OmegaConf.load(PIPELINE).objective)
    node["encoder"]["width"] = 4
    objective = build(registry, "objective", node, "objective", CONTEXT)
    assert isinstance(objective, SmileContrast) and isinstance(objective.estimator, SMILE)
    assert objective.estimator.clip == 5.0 and type(objective.critic).__name__ == "CosineCritic"


def test_bad_clip_in_a_pipeline_names_the_key_path(registry):
    node = {"name": "smile_contrast", "encoder": {"name": "small_conv", "width": 4},
            "estimator": {"name": "smile", "clip": -1.0}}
    expected = r"objective\.estimator: estimator 'smile' rejected its parameters: clip must be > 0"
    with pytest.raises(ConfigError, match=expected):
        build(registry, "objective", node, "objective", CONTEXT)
