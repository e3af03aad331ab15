"""``selfsup bench loader``: training from a folder of JPEGs, decoded into memory vs streamed.

Generates (once, reused by later runs) a flat folder of N synthetic ``SIZE x SIZE`` RGB
JPEGs (smooth random colour fields with a few blobs and mild noise, quality 90), then trains
MoCo v2 on ``small_conv`` (width 16, a queue of 4,096 keys, ``two_view`` augmentation) for a
fixed number of steps twice, each in a fresh Python process so that its resident memory is
its own: ``data.loader: memory`` (decoded once by the workers into a cache under the
benchmark folder; the decode is timed apart and is not part of images/s) and
``data.loader: stream`` (``data.workers`` DataLoader processes decode every batch).

images/s: ``(steps - warmup) x batch`` over the wall-clock time from the end of step
``warmup`` to the end of the last step, read by a callback (after the device's queued work
is done). That time holds everything the training loop does between those steps: waiting
for the next batch, augmentation, forward, backward, optimiser, logging rows, and the
restart of the loader at an epoch boundary; no checkpoint is written inside it. The time
the loop spends waiting for the loader's next batch is measured apart (``data wait``).

Memory (MB = 10^6 bytes): the training process's peak resident set (``ru_maxrss``, file
pages of the memory-mapped decode cache included), and its size after the imports, before
any data (``baseline``); the workers' peak: under streaming the sum of the live workers'
``VmHWM`` at the end of training (copy-on-write pages shared with the training process
count in both), in memory mode the largest decoding worker's (``RUSAGE_CHILDREN``; none when
the cache was read); and, at the end of training, the process's heap and file pages (the
memory-mapped decode cache is file pages: memory mode minus streaming there is the decoded
data held). ``trainer.retain_host_memory`` (on by default) keeps freed heap in the
process, so the peak is also roughly its size at the end. A benchmark reports: it exits 0
whatever the verdicts, non-zero only when a run fails.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

#: Generator version: part of the marker, so a change of the images regenerates the folder.
GENERATOR = "blobs-1"
MARKER = "images.json"
IMAGES = "images"
CACHE = "decode-cache"
RESULT_PREFIX = "SELFSUP_BENCH_LOADER "
MODES = ("memory", "stream")
RATIO_FLOOR = 0.80
MB = 1e6


def default_dir(images: int, size: int) -> Path:
    return Path(tempfile.gettempdir()) / f"selfsup-bench-loader-{images}-{size}"


def decoded_mb(images: int, size: int, channels: int = 3) -> float:
    """MB the decoded uint8 images take: N x C x S x S bytes."""
    return images * channels * size * size / MB


# --------------------------------------------------------------------------- the image folder
def synthetic_image(rng: Any, size: int) -> Any:
    """A smooth random colour field with 1-3 soft blobs and mild noise: uint8 ``[S, S, 3]``."""
    import numpy as np
    from PIL import Image

    grid = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)  # a coarse colour field, upsampled smoothly
    image = np.asarray(Image.fromarray(grid).resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for _ in range(int(rng.integers(1, 4))):
        cy, cx = rng.uniform(0, size, 2)
        radius = rng.uniform(0.08, 0.3) * size
        alpha = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2))[..., None]
        image = image * (1 - alpha) + rng.uniform(0, 255, 3).astype(np.float32) * alpha
    image += rng.normal(0.0, 6.0, image.shape).astype(np.float32)  # texture, so the JPEGs are not trivially small
    return np.clip(image, 0, 255).astype(np.uint8)


def folder_bytes(folder: Path) -> tuple[int, int]:
    """(bytes of the files, bytes they take on disk) of the files directly in ``folder``."""
    data = disk = 0
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_file():
                stat = entry.stat()
                data += stat.st_size
                disk += getattr(stat, "st_blocks", math.ceil(stat.st_size / 512)) * 512
    return data, disk


def prepare_folder(root: Path, images: int, size: int, seed: int = 0) -> dict[str, Any]:
    """``root/images/img_NNNNNN.jpg`` (N of them), generated unless ``root/images.json`` says
    they are there already. Returns the folder, whether it was reused, seconds and bytes."""
    from PIL import Image
    import numpy as np

    folder, marker = root / IMAGES, root / MARKER
    wanted = {"images": images, "size": size, "seed": seed, "generator": GENERATOR}
    try:
        reused = json.loads(marker.read_text()) == wanted
    except (OSError, ValueError):
        reused = False
    start = time.perf_counter()
    if not reused:
        if folder.exists():
            foreign = [p.name for p in folder.iterdir() if not (p.name.startswith("img_") and p.suffix == ".jpg")]
            if foreign:
                raise SystemExit(f"{folder}: holds files this benchmark did not write ({', '.join(foreign[:3])}); "
                                 "give --dir a folder of its own.")
            shutil.rmtree(folder)
        marker.unlink(missing_ok=True)
        shutil.rmtree(root / CACHE, ignore_errors=True)  # decoded from the old images
        folder.mkdir(parents=True)
        rng = np.random.default_rng(seed)
        width = max(6, len(str(images - 1)))
        for i in range(images):
            Image.fromarray(synthetic_image(rng, size)).save(folder / f"img_{i:0{width}d}.jpg", quality=90)
        marker.write_text(json.dumps(wanted))
    seconds = time.perf_counter() - start
    data, disk = folder_bytes(folder)
    return {"folder": str(folder), "reused": reused, "seconds": seconds, "bytes": data, "disk_bytes": disk}


def decode_ms_per_image(folder: Path, size: int, count: int = 200) -> float:
    """Milliseconds to decode one image of ``folder`` in this process (one thread), as a worker does."""
    from selfsup.plugins.data.sources import decode_image

    files = sorted(folder.iterdir())[:count]
    for file in files[:10]:  # the first decodes import and warm up the codec
        decode_image(file, size, 3)
    start = time.perf_counter()
    for file in files:
        decode_image(file, size, 3)
    return 1000 * (time.perf_counter() - start) / max(len(files), 1)


# --------------------------------------------------------------------------- one mode, in its own process
def _status_kib(pid: int | str, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _pss_kib(pid: int | str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def child_pids() -> list[int]:
    """Live child processes of this process (Linux ``/proc``; empty elsewhere)."""
    me, found = os.getpid(), []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for name in entries:
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) "
        if len(fields) > 1 and int(fields[1]) == me:
            found.append(int(name))
    return found


class _TimedLoader:
    """``trainer.loader`` with the time the training loop waits for each batch recorded."""

    def __init__(self, loader: Any):
        self.loader = loader
        self.waits: list[float] = []  # seconds per batch, in order

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)

    def epoch(self, epoch: int, start_batch: int = 0):
        batches = self.loader.epoch(epoch, start_batch)
        while True:
            start = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                return
            self.waits.append(time.perf_counter() - start)
            yield batch


def run_child(mode: str, root: Path, cache_dir: Path, size: int, steps: int, warmup: int, batch_size: int,
              workers: int | None, device: str, threads: int | None, seed: int = 0) -> dict[str, Any]:
    """Train ``steps`` steps with ``data.loader: mode`` in this process; the measured figures."""
    import resource

    import torch
    from omegaconf import OmegaConf

    from selfsup.engine import Callback, build_trainer
    from selfsup.plugin_manager import default_registry

    from .timing import synchronize

    if threads is not None:
        torch.set_num_threads(threads)
    registry = default_registry()  # every bundle imported: the baseline is the process before any data
    baseline_kib = _status_kib("self", "VmRSS") or 0
    out_dir = Path(tempfile.mkdtemp(prefix=f"selfsup-bench-loader-{mode}-"))
    cfg = {
        "seed": seed,
        "data": {"dataset": {"name": "image_folder", "root": str(root), "image_size": size, "channels": 3,
                             "labels": "none"},
                 "augment": {"name": "two_view"}, "batch_size": batch_size, "loader": mode, "workers": workers,
                 "cache_dir": str(cache_dir) if mode == "memory" else None},
        "objective": {"name": "moco_v2", "encoder": {"name": "small_conv", "width": 16}, "queue_size": 4096},
        "trainer": {"epochs": None, "max_steps": steps, "eval_before": False, "eval_after": False,
                    "progress": False, "log_every": 10, "out_dir": str(out_dir), "device": device,
                    "checkpoint_every_epochs": 10**9},  # the timed steps write no checkpoint
        "monitor": {"diagnostics": []},
    }
    try:
        start = time.perf_counter()
        trainer = build_trainer(OmegaConf.create(cfg), registry, run_dir=out_dir / "run")
        setup_seconds = time.perf_counter() - start
        from_cache = any("read from the cache" in note for note in trainer.data.notes)
        timed = _TimedLoader(trainer.loader)
        trainer.loader = timed
        marks: dict[int, float] = {}

        class StepClock(Callback):
            def on_fit_start(self, trainer, resume):
                if warmup == 0:
                    marks[0] = time.perf_counter()

            def on_step(self, trainer, logs):
                if trainer.global_step in (warmup, steps):
                    synchronize(trainer.device)
                    marks[trainer.global_step] = time.perf_counter()

        trainer.add_callback(StepClock())
        result = trainer.fit()
        seconds = marks[steps] - marks[warmup]
        timed_steps = steps - warmup
        waits = timed.waits[warmup:steps]  # the batches of the timed steps
        workers_alive = child_pids()
        kinds = {f: _status_kib("self", f) or 0 for f in ("RssAnon", "RssFile", "RssShmem")}
        hwm = [_status_kib(pid, "VmHWM") for pid in workers_alive]
        pss = [_pss_kib("self")] + [_pss_kib(pid) for pid in workers_alive]
        workers_used = int(getattr(trainer.data.train, "workers", 0) or 0) if mode == "stream" else None
        device_name = str(trainer.device)
        del trainer, timed
        gc.collect()  # the DataLoader's persistent workers exit (and are reaped) here
        self_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        children_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest reaped child
        if workers_alive:
            workers_kib, measured = sum(k or 0 for k in hwm), f"sum of {len(workers_alive)} live workers' VmHWM"
        else:
            workers_kib, measured = children_kib, "largest exited child (decode workers)" if children_kib else "none"
        return {
            "mode": mode, "device": device_name, "steps": result.steps, "warmup": warmup, "timed_steps": timed_steps,
            "timed_seconds": seconds, "batch_size": batch_size,
            "images_per_s": timed_steps * batch_size / seconds if seconds > 0 else 0.0,
            "step_ms": 1000 * seconds / timed_steps,
            "data_wait_seconds": sum(waits), "data_wait_share": sum(waits) / seconds if seconds > 0 else 0.0,
            "data_wait_ms_median": 1000 * statistics.median(waits) if waits else 0.0,
            "data_wait_ms_max": 1000 * max(waits) if waits else 0.0,
            "peak_rss_mb": self_kib * 1024 / MB, "baseline_rss_mb": baseline_kib * 1024 / MB,
            "workers_peak_rss_mb": workers_kib * 1024 / MB, "workers_measured": measured,
            "children_max_rss_mb": children_kib * 1024 / MB,
            "total_pss_mb_at_end": sum(k or 0 for k in pss) * 1024 / MB,
            **{f"{field.lower().replace('rss', 'rss_')}_mb_at_end": kib * 1024 / MB for field, kib in kinds.items()},
            "workers": workers_used if mode == "stream" else None,
            "torch_threads": torch.get_num_threads(),
            "setup_seconds": setup_seconds, "from_cache": from_cache if mode == "memory" else None,
            "decode_seconds": setup_seconds if mode == "memory" else None,
        }
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def child_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m selfsup.plugins.bench.loader --child")
    parser.add_argument("--child", choices=MODES, required=True)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--cache-dir", type=Path, required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--warmup", type=int, required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    result = run_child(args.child, args.root, args.cache_dir, args.size, args.steps, args.warmup, args.batch_size,
                       args.workers, args.device, args.threads)
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


def run_mode(mode: str, args: argparse.Namespace, root: Path, cache_dir: Path) -> dict[str, Any]:
    """One mode in a fresh interpreter: its JSON result (or SystemExit with its output on failure)."""
    command = [sys.executable, "-m", "selfsup.plugins.bench.loader", "--child", mode, "--root", str(root),
               "--cache-dir", str(cache_dir), "--size", str(args.size), "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--batch-size", str(args.batch_size), "--device", args.device]
    if args.workers is not None:
        command += ["--workers", str(args.workers)]
    threads = args.stream_threads if mode == "stream" and args.stream_threads is not None else args.threads
    if threads is not None:
        command += ["--threads", str(threads)]
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not lines:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-30:])
        raise RuntimeError(f"the {mode} run failed (exit {done.returncode}):\n{tail}")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


# --------------------------------------------------------------------------- the benchmark
def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    root = Path(args.dir).expanduser() if args.dir else default_dir(args.images, args.size)
    decoded = decoded_mb(args.images, args.size)
    print(f"selfsup bench loader: {args.images:,} JPEGs of {args.size}x{args.size} in {root}")
    folder = prepare_folder(root, args.images, args.size)
    what = "reused" if folder["reused"] else f"generated in {folder['seconds']:.1f} s"
    print(f"  images {what}: {folder['bytes'] / MB:.1f} MB of JPEG ({folder['disk_bytes'] / MB:.1f} MB on disk); "
          f"decoded {decoded:.1f} MB ({args.images:,} x 3 x {args.size} x {args.size} bytes)")
    decode_ms = decode_ms_per_image(Path(folder["folder"]), args.size)
    print(f"  decoding one image takes {decode_ms:.3f} ms in one process (PIL, as a worker does)")
    results: dict[str, dict[str, Any]] = {}
    for mode in MODES:
        print(f"  training {args.steps} steps with data.loader: {mode} ...", flush=True)
        results[mode] = run_mode(mode, args, Path(folder["folder"]), root / CACHE)
    memory, stream = results["memory"], results["stream"]
    ratio = stream["images_per_s"] / memory["images_per_s"] if memory["images_per_s"] > 0 else 0.0
    print(f"\nMoCo v2, small_conv width 16, batch {args.batch_size}, {args.steps} steps ({args.warmup} warm-up, "
          f"not timed), device {memory['device']}, {os.cpu_count()} CPU cores, stream workers {stream['workers']}")
    header = (f"{'mode':<7} {'threads':>7} {'images/s':>9} {'step ms':>8} {'data wait':>10} {'peak RSS MB':>12} "
              f"{'baseline MB':>12} {'workers MB':>11} {'PSS all MB':>11} {'setup s':>8}")
    print(header)
    print("-" * len(header))
    for mode, r in results.items():
        wait = f"{100 * r['data_wait_share']:.1f}%"
        print(f"{mode:<7} {r['torch_threads']:>7} {r['images_per_s']:>9.0f} {r['step_ms']:>8.1f} {wait:>10} "
              f"{r['peak_rss_mb']:>12.0f} {r['baseline_rss_mb']:>12.0f} {r['workers_peak_rss_mb']:>11.0f} "
              f"{r['total_pss_mb_at_end']:>11.0f} {r['setup_seconds']:>8.1f}")
    print("  data wait: share of the timed steps spent waiting for the next batch; baseline: the process after "
          "its imports, before any data;\n  PSS all: proportional set of the process and its live workers at the "
          "end of training (shared pages counted once)")
    cached = "read from the decode cache" if memory["from_cache"] else "decoded by the workers and cached"
    print(f"memory setup: the images {cached} in {memory['decode_seconds']:.1f} s (not part of images/s)")
    print(f"decoded dataset: {decoded:.1f} MB")
    print(f"stream/memory images/s = {100 * ratio:.0f}% (floor {100 * RATIO_FLOOR:.0f}%): "
          f"{'meets it' if ratio >= RATIO_FLOOR else 'below the floor'}")
    below = stream["peak_rss_mb"] < decoded
    print(f"stream peak RSS = {stream['peak_rss_mb']:.0f} MB vs decoded dataset {decoded:.1f} MB (must be below): "
          f"{'below' if below else 'not below'}; above the process's own baseline "
          f"{stream['peak_rss_mb'] - stream['baseline_rss_mb']:.0f} MB (memory mode: "
          f"{memory['peak_rss_mb'] - memory['baseline_rss_mb']:.0f} MB); its workers' peak "
          f"{stream['workers_peak_rss_mb']:.0f} MB ({stream['workers_measured']})")
    print(f"memory - stream peak RSS = {memory['peak_rss_mb'] - stream['peak_rss_mb']:.0f} MB; at the end of "
          f"training the processes hold {memory['rss_file_mb_at_end']:.0f} MB (memory) and "
          f"{stream['rss_file_mb_at_end']:.0f} MB (stream) of file pages (libraries, and in memory mode the "
          f"memory-mapped decode cache) and {memory['rss_anon_mb_at_end']:.0f} / {stream['rss_anon_mb_at_end']:.0f} "
          f"MB of heap")
    print(f"command: {command}")
    return {
        "command": command, "images": args.images, "size": args.size, "steps": args.steps, "warmup": args.warmup,
        "batch_size": args.batch_size, "dir": str(root), "generation": folder, "decoded_mb": decoded,
        "decode_ms_per_image": decode_ms, "modes": results, "ratio": ratio, "ratio_floor": RATIO_FLOOR,
        "meets_ratio": ratio >= RATIO_FLOOR, "stream_rss_below_decoded": below,
        "memory_minus_stream_rss_mb": memory["peak_rss_mb"] - stream["peak_rss_mb"],
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="selfsup bench loader", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=20_000, help="JPEGs in the generated folder")
    parser.add_argument("--size", type=int, default=64, help="side of the images in pixels")
    parser.add_argument("--steps", type=int, default=60, help="training steps per mode, warm-up included")
    parser.add_argument("--warmup", type=int, default=10, help="first steps of each mode, not timed")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, help="data.workers (default: one per CPU core but one, at most 8)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads in both runs (default: torch's own)")
    parser.add_argument("--stream-threads", type=int,
                        help="torch.set_num_threads in the streaming run only (default: --threads), e.g. the "
                             "cores the workers leave")
    parser.add_argument("--dir", help="the benchmark's folder (default: selfsup-bench-loader-N-SIZE in the temp dir)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    args = parser.parse_args(argv)
    if args.images < 1 or args.size < 1 or args.batch_size < 1:
        parser.error("--images, --size and --batch-size must be at least 1")
    if args.steps < 1 or not 0 <= args.warmup < args.steps:
        parser.error(f"--steps must be at least 1 and --warmup in [0, steps), got {args.steps} and {args.warmup}")
    if args.batch_size > args.images:
        parser.error(f"--batch-size {args.batch_size} is more than the {args.images} images")
    if args.workers is not None and args.workers < 0 or any(
            t is not None and t < 1 for t in (args.threads, args.stream_threads)):
        parser.error("--workers must be at least 0, --threads and --stream-threads at least 1")
    command = shlex.join(["selfsup", "bench", "loader", *argv])
    try:
        result = run(args, command)
    except RuntimeError as exc:
        print(f"selfsup bench loader: {exc}", file=sys.stderr)
        return 1
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]) if "--child" in sys.argv[1:] else main(sys.argv[1:]))
