"""The example third-party package (examples/plugin_package) installed with pip, end to end.

It adds the SMILE estimator and the ``smile_contrast`` bundle through the ``selfsup.plugins``
entry-point group only; selfsup lists them with the providing package, checks them, trains
from the package's YAML, and forgets them when autoloading is switched off.
"""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import pytest
from plugin_install import activate, pip_install_target

import selfsup.plugin_manager as pm
from selfsup.cli import main

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "examples" / "plugin_package"
TINY = ["trainer.epochs=1", "trainer.max_steps=3", "data.batch_size=32", "objective.encoder.width=4",
        "objective.embedding_dim=16", "trainer.eval_before=false", "trainer.eval_after=false",
        "trainer.progress=false", "trainer.log_every=1"]


def section(out: str, kind: str) -> list[str]:
    """The lines ``selfsup plugins list`` prints under ``kind:``."""
    lines = out.splitlines()
    start = lines.index(f"{kind}:")
    block = []
    for line in lines[start + 1:]:
        if not line.startswith("  "):
            break
        block.append(line)
    return block


@pytest.mark.slow
def test_example_package_installs_lists_trains_and_switches_off(tmp_path, monkeypatch, request, capsys):
    target = pip_install_target(PACKAGE, tmp_path)
    assert (target / "selfsup_example_plugin-0.1.0.dist-info" / "entry_points.txt").is_file()
    activate(monkeypatch, request, target, "selfsup_example_plugin")
    monkeypatch.delenv(pm.AUTOLOAD_ENV, raising=False)

    # listed under its kind, with the package and version that provide it
    assert main(["plugins", "list"]) == 0
    out = capsys.readouterr().out
    (smile,) = [line for line in section(out, "estimator") if line.split()[0] == "smile"]
    (bundle,) = [line for line in section(out, "objective") if line.split()[0] == "smile_contrast"]
    assert smile.endswith("[selfsup-example-plugin 0.1.0]") and "SMILE" in smile
    assert bundle.endswith("[selfsup-example-plugin 0.1.0]")
    assert "[selfsup 0.1.0]" in next(line for line in section(out, "estimator") if line.split()[0] == "infonce")

    assert main(["plugins", "show", "estimator", "smile"]) == 0
    out = capsys.readouterr().out
    assert "provided by selfsup-example-plugin 0.1.0 (selfsup_example_plugin.smile:SMILE)" in out
    assert "clip: float | None = 5.0" in out and "is_lower_bound=False" in out

    # the conformance kit, from the command line, on this package only
    assert main(["plugins", "check", "selfsup-example-plugin"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert [r[:2] + r[4:5] for r in rows[1:4]] == [["estimator", "smile", "pass"],
                                                    ["objective", "smile_contrast", "pass"],
                                                    ["logger", "best_metrics", "pass"]]
    # the bundle's step on 2 worker processes (which load the package too) equals 1 process's
    assert rows[4][:5] == ["objective", "smile_contrast", "selfsup-example-plugin", "0.1.0", "pass"]
    assert rows[4][5] == "distributed:"
    assert rows[-1] == ["4", "passed,", "0", "failed,", "0", "skipped"]

    # a few training steps from the package's own pipeline
    run_dir = tmp_path / "run"
    assert main(["train", str(PACKAGE / "pipeline.yaml"), *TINY, "--run-dir", str(run_dir)]) == 0
    with open(run_dir / "metrics.csv") as f:
        metrics = list(csv.DictReader(f))
    assert [int(r["step"]) for r in metrics] == [1, 2, 3]
    assert all(math.isfinite(float(r["loss"])) and math.isfinite(float(r["mi"])) for r in metrics)
    assert (run_dir / "checkpoint.pt").is_file()
    assert "name: smile_contrast" in (run_dir / "config.yaml").read_text()

    # the autoload switch: only selfsup's own components remain
    monkeypatch.setenv(pm.AUTOLOAD_ENV, "1")
    pm.reset_default()
    assert main(["plugins", "list", "estimator"]) == 0
    names = [line.split()[0] for line in section(capsys.readouterr().out, "estimator")]
    assert "infonce" in names and "smile" not in names
    assert main(["train", str(PACKAGE / "pipeline.yaml"), *TINY, "--run-dir", str(tmp_path / "off")]) == 2
    assert "objective.name: unknown objective 'smile_contrast'" in capsys.readouterr().err


@pytest.mark.slow
def test_example_package_own_tests_pass(tmp_path):
    """The package's test suite (the conformance kit and hand computations) from a clean process."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(PACKAGE)],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "failed" not in done.stdout
