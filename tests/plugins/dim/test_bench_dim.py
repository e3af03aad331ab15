"""``selfsup bench dim`` end to end on a tiny stand-in for Fashion-MNIST (seconds of budget)."""

import numpy as np
import pytest

from selfsup.plugins.dim.bench_dim import VARIANTS, main, parse_args, pipeline


@pytest.fixture
def tiny_npz(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=rng.integers(0, 255, (240, 28, 28), dtype=np.uint8), y_train=np.arange(240) % 10,
             x_test=rng.integers(0, 255, (60, 28, 28), dtype=np.uint8), y_test=np.arange(60) % 10)
    return path


def test_variants_are_the_three_of_the_issue(tmp_path):
    assert VARIANTS == {"G": ("G", "jsd"), "L-jsd": ("L", "jsd"), "L-infonce": ("L", "infonce")}
    args = parse_args([])
    assert args.minutes == 15.0 and args.threads == 2 and args.layers == ["code", "fc"]
    cfg = pipeline("L-infonce", args, tmp_path)
    assert cfg["data"]["dataset"] == {"name": "arrays", "path": "../shared/data/fashion_mnist.npz"}
    assert cfg["objective"]["preset"] == "L" and cfg["objective"]["estimator"] == {"name": "infonce"}


@pytest.mark.slow
def test_bench_dim_runs_and_prints_the_table(tiny_npz, tmp_path, capsys):
    code = main(["--data", str(tiny_npz), "--variants", "G", "L-infonce", "--minutes", "0.02", "--eval-at", "0.01",
                 "--batch-size", "16", "--critic-dim", "8", "--threads", "1", "--out", str(tmp_path / "runs")])
    assert code == 0
    out = capsys.readouterr().out
    assert "random init" in out and "DIM(G)" in out and "DIM(L-infonce)" in out
    table = out[out.index("model"):].splitlines()
    assert len(table) == 1 + 2 * (1 + 2 * 2)  # header; code and fc rows of random init, 2 variants x 2 evaluations
    assert (tmp_path / "runs" / "L-infonce" / "checkpoint.pt").exists()


def test_bad_budget_is_rejected():
    with pytest.raises(SystemExit):
        parse_args(["--minutes", "1", "--eval-at", "2"])
