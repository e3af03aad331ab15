"""Study files: parsing, defaults, grid expansion and naming, one-paragraph errors with key paths."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from selfsup.errors import ConfigError
from selfsup.study.spec import Budget, expand, format_value, load_study, slug, Variant


def write_study(tmp_path, text: str, name: str = "mystudy.yaml"):
    (tmp_path / "base.yaml").write_text("objective: {name: moco}\n")
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_and_paths_relative_to_the_study_file(tmp_path):
    (tmp_path / "studies").mkdir()
    (tmp_path / "base.yaml").write_text("objective: {name: moco}\n")
    path = tmp_path / "studies" / "s.yaml"
    path.write_text("pipeline: ../base.yaml\nvariants: [{name: a}]\n")
    spec = load_study(path)
    assert spec.name == "s"
    assert spec.pipeline == tmp_path / "studies" / ".." / "base.yaml"
    assert spec.seeds == (0,)
    assert spec.metric == "knn_acc"
    assert spec.budget == Budget()
    assert spec.budget.overrides() == []
    assert spec.variants == (Variant("a", ()),)


def test_budget_overrides_and_command_line_replacement(tmp_path):
    path = write_study(tmp_path, "pipeline: base.yaml\nbudget: {steps: 300}\nvariants: [{name: a}]\n")
    spec = load_study(path)
    assert spec.budget.overrides() == ["trainer.max_steps=300", "trainer.max_minutes=null", "trainer.epochs=null"]
    quick = load_study(path, minutes=1.5)
    assert quick.budget == Budget(minutes=1.5)
    assert quick.budget.overrides() == ["trainer.max_steps=null", "trainer.max_minutes=1.5", "trainer.epochs=null"]
    both = load_study(path, steps=7, minutes=2).budget
    assert both.overrides() == ["trainer.max_steps=7", "trainer.max_minutes=2", "trainer.epochs=null"]


def test_grid_crossed_with_variants_and_grid_alone(tmp_path):
    text = """
pipeline: base.yaml
overrides: [trainer.progress=false]
variants:
  - {name: simsiam, overrides: []}
  - {name: no_sg, overrides: [objective.stop_gradient=false]}
grid:
  objective.sampler.name: [in_batch, momentum_queue]
  optim.lr: [0.1]
"""
    spec = load_study(write_study(tmp_path, text))
    assert [v.name for v in spec.variants] == [
        "simsiam/objective.sampler.name=in_batch,optim.lr=0.1",
        "simsiam/objective.sampler.name=momentum_queue,optim.lr=0.1",
        "no_sg/objective.sampler.name=in_batch,optim.lr=0.1",
        "no_sg/objective.sampler.name=momentum_queue,optim.lr=0.1",
    ]
    assert spec.variants[2].overrides == ("objective.stop_gradient=false", "objective.sampler.name=in_batch",
                                          "optim.lr=0.1")
    assert spec.overrides == ("trainer.progress=false",)
    grid_only = load_study(write_study(tmp_path, "pipeline: base.yaml\ngrid: {a.b: [1, null, true]}\n", "g.yaml"))
    assert [v.name for v in grid_only.variants] == ["a.b=1", "a.b=null", "a.b=true"]
    assert grid_only.variants[1].overrides == ("a.b=null",)


def test_grid_values_round_trip_through_dotlist_overrides():
    for value in [1, 0.5, "momentum_queue", None, True, [1, 2], {"name": "dot"}]:
        text = f"key={format_value(value)}"
        assert OmegaConf.to_container(OmegaConf.from_dotlist([text]))["key"] == value
    assert expand([Variant("v", ("x=1",))], None) == [Variant("v", ("x=1",))]


def test_slug_is_file_name_safe():
    assert slug("simsiam/objective.sampler.name=in_batch") == "simsiam_objective.sampler.name-in_batch"
    assert slug("a b/c") == "a_b_c"
    assert slug("///") == "variant"
    assert len(slug("x" * 200)) == 60


@pytest.mark.parametrize(
    "text, key",
    [
        ("pipeline: base.yaml\nvarients: [{name: a}]\n", "varients: unknown key. Did you mean 'variants'"),
        ("pipeline: base.yaml\nvariants: []\n", "variants: the list is empty"),
        ("pipeline: base.yaml\n", "variants: a study needs variants, a grid, or both"),
        ("pipeline: base.yaml\nvariants: [{name: a}, {name: b}, {name: a}]\n", "variants.2.name: variant name 'a'"),
        ("pipeline: base.yaml\nvariants: [{name: a b}, {name: a_b}]\n", "same folder name 'a_b'"),
        ("pipeline: base.yaml\nvariants: [{name: a}, {name: b, overides: []}]\n", "variants.1.overides: unknown key"),
        ("pipeline: base.yaml\nvariants: [{name: a}, {name: b}, {name: c, overrides: optim.lr=1}]\n",
         "variants.2.overrides: expected a list"),
        ("pipeline: base.yaml\nvariants: [{name: a, overrides: [{optim.lr: 1}]}]\n",
         "variants.0.overrides.0: expected an override of the form key.path=value"),
        ("pipeline: base.yaml\nvariants: [{overrides: []}]\n", "variants.0.name: expected a non-empty string"),
        ("pipeline: base.yaml\nvariants: [{name: a}]\nbudget: {steps: 0}\n", "budget.steps: expected a positive"),
        ("pipeline: base.yaml\nvariants: [{name: a}]\nbudget: {steps: 2.5}\n", "budget.steps: expected a positive"),
        ("pipeline: base.yaml\nvariants: [{name: a}]\nbudget: {minutes: -1}\n", "budget.minutes: expected a positive"),
        ("pipeline: base.yaml\nvariants: [{name: a}]\nbudget: {step: 3}\n", "budget.step: unknown key. Did you mean"),
        ("pipeline: base.yaml\nvariants: [{name: a}]\nbudget: 300\n", "budget: expected a mapping"),
        ("pipeline: base.yaml\nvariants: [{name: a}]\nseeds: 0\n", "seeds: expected a non-empty list"),
        ("pipeline: base.yaml\nvariants: [{name: a}]\nseeds: [0, x]\n", "seeds.1: expected an integer"),
        ("pipeline: base.yaml\nvariants: [{name: a}]\nseeds: [1, 1]\n", "seeds: lists a seed twice"),
        ("pipeline: base.yaml\nvariants: [{name: a}]\nmetric: knn\n", "metric: expected one of knn_acc, linear_acc"),
        ("pipeline: nowhere.yaml\nvariants: [{name: a}]\n", "pipeline: 'nowhere.yaml' does not exist"),
        ("variants: [{name: a}]\n", "pipeline: expected the path of a pipeline YAML"),
        ("pipeline: base.yaml\ngrid: {optim.lr: []}\n", "grid.optim.lr: expected a non-empty list"),
        ("pipeline: base.yaml\ngrid: {optim.lr: 0.1}\n", "grid.optim.lr: expected a non-empty list"),
        ("pipeline: base.yaml\nvariants: [{name: a}]\noverrides: [nonsense]\n", "overrides.0: expected an override"),
        ("- just\n- a list\n", "expected a mapping of study keys"),
    ],
)
def test_errors_name_the_key_path_and_the_file(tmp_path, text, key):
    path = write_study(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_study(path)
    message = str(info.value)
    assert key in message
    assert str(path) in message
    assert "\n" not in message


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_study(tmp_path / "none.yaml")
    path = write_study(tmp_path, "pipeline: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_study(path)


def test_command_line_budget_must_be_positive(tmp_path):
    path = write_study(tmp_path, "pipeline: base.yaml\nvariants: [{name: a}]\n")
    with pytest.raises(ConfigError, match="--steps: must be > 0"):
        load_study(path, steps=0)


def test_a_variant_may_name_a_base_pipeline_of_its_own(tmp_path):
    from selfsup.study.plan import plan_study

    (tmp_path / "dim.yaml").write_text("objective: {name: dim, preset: G}\n")
    path = write_study(tmp_path, "pipeline: base.yaml\nvariants:\n  - {name: moco}\n"
                                 "  - {name: dim, pipeline: dim.yaml, overrides: [objective.preset=L]}\n"
                                 "grid: {seed: [0]}\n")
    spec = load_study(path)
    assert [v.pipeline for v in spec.variants] == [None, tmp_path / "dim.yaml"]  # kept through the grid
    runs = plan_study(spec, tmp_path / "out")
    assert [r.resolved["objective"] for r in runs] == [{"name": "moco"}, {"name": "dim", "preset": "L"}]
    with pytest.raises(ConfigError, match=r"variants\.0\.pipeline: 'nope\.yaml' does not exist"):
        load_study(write_study(tmp_path, "pipeline: base.yaml\nvariants: [{name: a, pipeline: nope.yaml}]\n"))
