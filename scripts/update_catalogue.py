"""Rewrite registry.yaml from the live registry (selfsup's own components only).

Run after adding or renaming a built-in component; tests/core/test_catalogue.py fails until
the catalogue and the registry agree.

    python scripts/update_catalogue.py
"""

from __future__ import annotations

from pathlib import Path

import yaml

from selfsup.plugin_manager import load_registry

HEADER = """\
# The catalogue of selfsup's built-in components: kind -> name -> target + one-line summary.
# Pipelines name these entries; tests/core/test_catalogue.py checks that this file and the
# live registry agree. Regenerate with: python scripts/update_catalogue.py
"""


def main() -> None:
    loaded = load_registry(autoload=False)
    if loaded.failures:  # a broken built-in would silently empty the catalogue
        raise SystemExit("could not load selfsup's own plugin: " + "; ".join(f.reason for f in loaded.failures))
    registry = loaded.registry
    catalogue: dict = {}
    for entry in registry.list():
        if entry.provider.package == "selfsup":
            catalogue.setdefault(entry.kind, {})[entry.name] = {"target": entry.target, "summary": entry.summary}
    path = Path(__file__).resolve().parents[1] / "registry.yaml"
    path.write_text(HEADER + yaml.safe_dump(catalogue, sort_keys=False, width=120))
    print(f"wrote {path}: {sum(len(v) for v in catalogue.values())} components")


if __name__ == "__main__":
    main()
