"""registry.yaml and the live registry must agree, so neither can drift."""

from pathlib import Path

import yaml

CATALOGUE = Path(__file__).resolve().parents[2] / "registry.yaml"


def live_catalogue(registry) -> dict:
    out: dict = {}
    for entry in registry.list():
        if entry.provider.package == "selfsup":
            out.setdefault(entry.kind, {})[entry.name] = {"target": entry.target, "summary": entry.summary}
    return out


def test_catalogue_matches_live_registry(registry):
    declared = yaml.safe_load(CATALOGUE.read_text())
    live = live_catalogue(registry)
    missing = {k: sorted(set(v) - set(declared.get(k, {}))) for k, v in live.items()}
    extra = {k: sorted(set(v) - set(live.get(k, {}))) for k, v in declared.items()}
    assert not any(missing.values()), f"registered but not in registry.yaml: {missing}"
    assert not any(extra.values()), f"in registry.yaml but not registered: {extra}"
    assert declared == live


def test_catalogue_ships_inside_the_package():
    import selfsup.plugins

    shipped = Path(selfsup.plugins.__file__).with_name("registry.yaml")
    assert shipped.read_text() == CATALOGUE.read_text()
