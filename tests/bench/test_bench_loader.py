"""`selfsup bench loader` end to end at a tiny size: the generated folder, both modes in their
own processes, the JSON results and the verdict lines (what it measures, not how fast)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from selfsup.plugins.bench import loader

TINY = ["--images", "300", "--size", "16", "--steps", "4", "--warmup", "1", "--batch-size", "32", "--workers", "1"]


def test_bench_loader_runs_both_modes_and_reports_their_figures(tmp_path, capsys):
    out = tmp_path / "result.json"
    assert loader.main([*TINY, "--dir", str(tmp_path / "bench"), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["decoded_mb"] == pytest.approx(300 * 3 * 16 * 16 / 1e6)
    assert len(list((tmp_path / "bench" / "images").glob("img_*.jpg"))) == 300
    assert result["generation"]["bytes"] > 0 and not result["generation"]["reused"]
    assert result["decode_ms_per_image"] > 0
    memory, stream = result["modes"]["memory"], result["modes"]["stream"]
    for mode, r in result["modes"].items():
        assert r["mode"] == mode
        assert r["steps"] == 4 and r["timed_steps"] == 3  # the requested steps, the first one untimed
        assert r["images_per_s"] > 0 and r["timed_seconds"] > 0
        assert r["peak_rss_mb"] > r["baseline_rss_mb"] > 0
        assert 0 <= r["data_wait_share"] <= 1
    assert stream["workers"] == 1 and stream["workers_peak_rss_mb"] > 0  # the live worker was measured
    assert memory["from_cache"] is False and memory["decode_seconds"] > 0  # the first run decodes and caches
    assert result["ratio"] == pytest.approx(stream["images_per_s"] / memory["images_per_s"])
    assert result["stream_rss_below_decoded"] == (stream["peak_rss_mb"] < result["decoded_mb"])
    printed = capsys.readouterr().out
    assert "stream/memory images/s = " in printed and "(floor 80%)" in printed
    assert "stream peak RSS = " in printed and "vs decoded dataset 0.2 MB (must be below)" in printed
    assert "command: selfsup bench loader --images 300" in printed


def test_the_folder_is_generated_once_and_reused(tmp_path):
    first = loader.prepare_folder(tmp_path, 12, 8)
    again = loader.prepare_folder(tmp_path, 12, 8)
    assert not first["reused"] and again["reused"] and again["bytes"] == first["bytes"]
    other = loader.prepare_folder(tmp_path, 5, 8)  # another count: the folder is regenerated
    assert not other["reused"] and len(list((tmp_path / "images").iterdir())) == 5


def test_a_folder_holding_other_files_is_refused(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "holiday.jpg").write_bytes(b"")
    with pytest.raises(SystemExit, match="did not write"):
        loader.prepare_folder(tmp_path, 3, 8)
    assert (tmp_path / "images" / "holiday.jpg").exists()


def test_synthetic_images_are_structured_not_constant():
    image = loader.synthetic_image(np.random.default_rng(0), 32)
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    assert 10 < image.std() < 120


@pytest.mark.parametrize("argv, message", [
    (["--steps", "3", "--warmup", "3"], "--warmup in [0, steps)"),
    (["--images", "10", "--batch-size", "32"], "more than the 10 images"),
    (["--threads", "0"], "--threads and --stream-threads at least 1"),
])
def test_bench_loader_arguments_out_of_range_are_refused_before_any_work(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        loader.main([*argv, "--dir", str(tmp_path / "never")])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "never").exists()
