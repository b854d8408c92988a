"""What writing the run report costs, on a synthetic data set of tiny images.

    python -m bench.bench_report                      # 5,000 images: seconds per step
    python -m bench.bench_report --images 300 --screenshot docs/report_screenshot.png

It writes ``--images`` JPEGs of 64 x 48 pixels (VOC-like: 20 class names, 1 to 8 objects, a
class-dependent share of good boxes and boxes too big, inside an object, overlapping weakly or
off every object) into a temporary folder, then times each step of a report from records and
predictions: reading the image headers (:func:`report.report_images`), building the page
(:func:`report.build_report`: verdicts, counts, plots, the capped gallery) and building a
comparison with a second, perturbed run. ``--cli`` also times ``python report.py`` end to end
(start-up, VOC XML parsing, both pages) on a VOC tree of the same size.

``--screenshot PATH`` renders the report with a headless chromium (``chromium``,
``chromium-browser`` or ``google-chrome`` on PATH) and saves its top as a small palette PNG.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from lost import report
from lost.data import datasets
from lost.io import safe_files
from tests.tiny_datasets import make_voc_tree

ROOT = Path(__file__).resolve().parents[1]

VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
WIDTH, HEIGHT = 64, 48
OBJECT_COLOURS = ((70, 110, 180), (200, 170, 110), (150, 100, 170), (190, 190, 190), (110, 80, 60))
"""Neither green nor red, the colours of the boxes drawn on the thumbnails."""
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def random_box(rng: np.random.Generator, min_side: int = 4) -> list[int]:
    """A box [x1, y1, x2, y2] inside the WIDTH x HEIGHT image, sides at least `min_side`."""
    w = int(rng.integers(min_side, WIDTH + 1))
    h = int(rng.integers(min_side, HEIGHT + 1))
    x1 = int(rng.integers(0, WIDTH - w + 1))
    y1 = int(rng.integers(0, HEIGHT - h + 1))
    return [x1, y1, x1 + w, y1 + h]


def paint_image(path: Path, boxes: np.ndarray, rng: np.random.Generator) -> None:
    """A WIDTH x HEIGHT JPEG: a noisy dark background, each box [x1, y1, x2, y2) a flat colour."""
    pixels = rng.integers(20, 70, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
    for x1, y1, x2, y2 in boxes:
        pixels[y1:y2, x1:x2] = OBJECT_COLOURS[int(rng.integers(len(OBJECT_COLOURS)))]
    Image.fromarray(pixels).save(path, quality=90)


def predicted_box(rng: np.random.Generator, gt: np.ndarray, quality: float) -> np.ndarray:
    """A box near the largest object with probability `quality`, else too big, a part,
    shifted or elsewhere."""
    areas = (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])
    x1, y1, x2, y2 = gt[int(np.argmax(areas))]
    draw = rng.random()
    if draw < quality:
        return np.array([x1, y1, x2, y2]) + rng.integers(-2, 3, size=4)
    kind = rng.integers(0, 4)
    if kind == 0:
        return np.array([0, 0, WIDTH, HEIGHT])
    if kind == 1:
        return np.array([x1, y1, x1 + max(1, (x2 - x1) // 3), y1 + max(1, (y2 - y1) // 3)])
    if kind == 2:
        half_w, half_h = (x2 - x1) // 2, (y2 - y1) // 2
        return np.array([x1 + half_w, y1 + half_h, x2 + half_w, y2 + half_h])
    return np.array(random_box(rng, 2))


def synthetic_records(folder: Path, count: int, seed: int = 0) -> tuple[list[datasets.ImageRecord], dict, dict]:
    """`count` labelled records with JPEGs in `folder`, and two runs' predictions on them."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    quality = {name: 0.3 + 0.6 * rng.random() for name in VOC_CLASSES}
    records, preds_a, preds_b = [], {}, {}
    for index in range(count):
        objects = int(rng.choice([1, 1, 1, 1, 2, 2, 3, 4, 6, 8]))
        gt = np.array([random_box(rng) for _ in range(objects)], dtype=np.int64)
        labels = tuple(str(rng.choice(VOC_CLASSES)) for _ in range(objects))
        name = f"{index:06d}.jpg"
        paint_image(folder / name, gt, rng)
        records.append(datasets.ImageRecord(name, folder / name, gt, labels))
        preds_a[name] = predicted_box(rng, gt, quality[labels[0]])
        preds_b[name] = predicted_box(rng, gt, 0.6)
    return records, preds_a, preds_b


Timings = list[tuple[str, float, float]]
"""(step, wall-clock seconds, CPU seconds)."""


def timed(step: str, timings: Timings, function, *args, **kwargs):
    start, start_cpu = time.perf_counter(), time.process_time()
    result = function(*args, **kwargs)
    timings.append((step, time.perf_counter() - start, time.process_time() - start_cpu))
    return result


def bench_library(work: Path, count: int) -> tuple[Path, Timings]:
    """Time the report of `count` synthetic images; returns the output folder and timings."""
    timings: Timings = []
    records, preds_a, preds_b = timed(
        "write the synthetic JPEGs (not part of a report)", timings, synthetic_records, work / "images", count
    )
    images_a = timed("report_images: read headers", timings, report.report_images, records, preds_a)
    images_b = timed("with_predictions: the second run", timings, report.with_predictions, images_a, preds_b)
    info = report.RunInfo(
        source="synthetic preds.pkl",
        method="LOST (k = 100, k features)",
        backbone="vit_small/16",
        weights="published (default download)",
        dataset=f"synthetic, {count} images",
        seconds=count / 12.0,
        images_per_second=12.0,
    )
    run_a = report.ReportRun(info, tuple(images_a))
    run_b = report.ReportRun(report.RunInfo(source="other preds.pkl"), tuple(images_b))
    output = work / "out"
    timed("build_comparison: compare.html", timings, report.build_comparison, run_a, run_b, output)
    timed(
        "build_report: report.html (plots, 60 thumbnails)",
        timings,
        report.build_report,
        run_a,
        output,
        links=(("compare.html", "Comparison with another run"),),
    )
    return output, timings


def bench_cli(work: Path, count: int) -> tuple[float, float]:
    """Wall-clock and CPU seconds of `python report.py` (with --compare) on a VOC tree of `count`
    tiny images."""
    rng = np.random.default_rng(1)
    images = {}
    for index in range(count):
        objects = int(rng.choice([1, 1, 2, 3]))
        images[f"{index:06d}"] = [
            (b[0] + 1, b[1] + 1, b[2], b[3], 0, 0) for b in (random_box(rng) for _ in range(objects))
        ]
    tiny = make_voc_tree(work / "voc", images=images)
    preds = {name: predicted_box(rng, gt, 0.6) for name, gt in tiny.gt.items()}
    safe_files.write_predictions(work / "voc_run", preds)
    command = [
        sys.executable,
        str(ROOT / "report.py"),
        "--pred_file",
        str(work / "voc_run" / "preds.pkl"),
        "--dataset",
        "VOC07",
        "--set",
        "trainval",
        "--datasets_root",
        str(work / "voc"),
        "--compare",
        str(work / "voc_run" / "preds.pkl"),
        "--output",
        str(work / "voc_out"),
    ]
    start, start_cpu = time.perf_counter(), _children_cpu()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start, _children_cpu() - start_cpu


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def screenshot(page: Path, target: Path, height: int) -> None:
    """The top `height` pixels of `page` at 1200 px wide, as a 128-colour PNG."""
    browser = next((path for path in map(shutil.which, BROWSERS) if path), None)
    if browser is None:
        raise SystemExit(f"no browser among {', '.join(BROWSERS)} on PATH; install chromium")
    raw = page.parent / "screenshot_full.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--window-size=1200,{height}"]
    subprocess.run([browser, *flags, f"--screenshot={raw}", page.resolve().as_uri()], check=True, capture_output=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    Image.open(raw).convert("RGB").quantize(colors=128).save(target, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default=5000, type=int)
    parser.add_argument("--cli", action="store_true", help="also time python report end to end on a VOC tree")
    parser.add_argument("--screenshot", default=None, type=Path, help="save a screenshot of the report here")
    parser.add_argument("--height", default=2200, type=int, help="screenshot height in pixels")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        output, timings = bench_library(Path(tmp), args.images)
        if args.cli:
            step = f"python report --compare, end to end ({args.images} VOC XMLs)"
            timings.append((step, *bench_cli(Path(tmp), args.images)))
        if args.screenshot is not None:
            screenshot(output / "report.html", args.screenshot, args.height)
        size = sum(path.stat().st_size for path in output.rglob("*") if path.is_file())
        print(f"{args.images} images, report folder {size / 1e6:.2f} MB")
        print("    wall      CPU  step")
        for step, wall, cpu in timings:
            print(f"{wall:7.2f} s {cpu:6.2f} s  {step}")


if __name__ == "__main__":
    main()
