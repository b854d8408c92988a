"""Unsupervised saliency detection: a method's saliency maps on ECSSD, DUTS-TE or DUT-OMRON (or
any folder of images and masks), scored by TokenCut's or FOUND's published protocol.

    python main_saliency_evaluation.py --dataset ECSSD --method tokencut --protocol tokencut --bilateral
    python main_saliency_evaluation.py --dataset DUTS-TE --method found --patch_size 8 --protocol found
    python main_saliency_evaluation.py --dataset DUT-OMRON --method found --patch_size 8 --protocol found --mode multi
    python main_saliency_evaluation.py --image_dir photos --mask_dir masks --method found_bkg --protocol found

A run writes ``<output_dir>/<DATASET>/<exp>/`` (``<output_dir>/<folder>-<hash of its path>/<exp>/`` for ``--image_dir``) (``<exp>`` as ``FOUND-vit_small8_k_single_bs_pad_found``,
see ``run_spec.SaliencyRunSpec``) with ``maps/<name>.png`` (each image's map at its full
resolution, 8-bit grey, 255 = foreground), ``metrics.json`` (``protocol``, ``acc``, ``iou``,
``max_fbeta`` as fractions in [0, 1], the values of every image, the settings, and the timing of
the last invocation: seconds from start-up to the end, images processed, images/s),
``skipped.txt`` (name, tab, reason) and the journal that lets a killed run resume: finished maps
are kept, and a folder of a run with other settings or other input is refused.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from lost.backbones import FeatureExtractor, load_backbone
from lost.cli import (
    add_backbone_flags,
    add_engine_flags,
    add_method_flags,
    backbone_spec,
    default_batch_size,
    default_workers,
    params_from_args,
)
from lost.data.images import PREPROCESSING, capped_size, load_rgb, read_image_size
from lost.data.saliency import SALIENCY_DATASETS, SaliencySpec, load_saliency_dataset, read_grey_mask, saliency_records
from lost.engine.discovery import Discovery, DiscoveryConfig, discover_batches
from lost.errors import LostError, run_cli, writing
from lost.eval.saliency import PROTOCOLS, ImageCounts, SaliencyMeter, ground_truth_mask, image_counts, summary_line
from lost.io.journal import Journal
from lost.io.safe_files import atomic_write, write_json
from lost.methods import METHODS, method_entry
from lost.methods.saliency import MODES, MapGeometry, SaliencyMapper, SaliencyOptions, mapper_for_method
from lost.run_spec import RunSpec, SaliencyRunSpec, input_folder_name


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Saliency maps of a discovery method, scored by a published protocol.")
    add_backbone_flags(parser)
    data = parser.add_argument_group("input")
    data.add_argument("--dataset", default=None, choices=list(SALIENCY_DATASETS))
    data.add_argument("--datasets_root", default="datasets", help="folder holding ECSSD, DUTS and DUT-OMRON")
    data.add_argument("--image_dir", default=None, help="a folder of images instead of a data set (with --mask_dir)")
    data.add_argument("--mask_dir", default=None, help="their ground-truth masks, <image stem>.png")
    method = parser.add_argument_group("method")
    method.add_argument("--method", required=True, choices=list(METHODS), help="a method whose results have masks")
    method.add_argument("--protocol", required=True, choices=PROTOCOLS, help="the published metric code to reproduce")
    method.add_argument("--bilateral", action="store_true", help="refine with the bilateral solver as the method's paper does")
    method.add_argument("--mode", default=None, choices=MODES, help="FOUND's evaluation mode: single (largest component) or multi (soft map); default single")
    method.add_argument("--preprocess", default=None, choices=PREPROCESSING, help="fit images to the patch grid by padding or resizing (default: the method's published pipeline)")
    add_method_flags(parser)
    run = parser.add_argument_group("run")
    run.add_argument("--output_dir", default="outputs")
    add_engine_flags(run)
    run.add_argument("--overwrite", action="store_true", help="start over instead of resuming an earlier run")
    run.add_argument("--strict", action="store_true", help="exit non-zero when an image had to be skipped")
    return parser.parse_args(argv)


def load_inputs(args: argparse.Namespace) -> SaliencySpec:
    """The data set, or the --image_dir / --mask_dir pair; LostError when they are not given right."""
    if (args.image_dir is None) != (args.mask_dir is None):
        raise LostError("--image_dir and --mask_dir go together: give both, or --dataset instead")
    if args.image_dir is not None:
        if args.dataset is not None:
            raise LostError(f"--dataset {args.dataset} and --image_dir both name the input: give one of them")
        return saliency_records(Path(args.image_dir), Path(args.mask_dir))
    if args.dataset is None:
        raise LostError(f"no input: give --dataset ({', '.join(SALIENCY_DATASETS)}) or --image_dir and --mask_dir")
    return load_saliency_dataset(args.dataset, Path(args.datasets_root))


def run_spec(args: argparse.Namespace, spec: SaliencySpec, mapper: SaliencyMapper) -> SaliencyRunSpec:
    """The settings of the command line that change the maps or the scores."""
    method = method_entry(args.method)
    run = RunSpec(spec.name, backbone_spec(args, method), method.name, params_from_args(method, args), args.precision, args.max_size or None)
    return SaliencyRunSpec(
        run=run,
        protocol=args.protocol,
        preprocess=args.preprocess or mapper.preprocess,
        bilateral=args.bilateral,
        mode=(args.mode or "single") if len(mapper.modes) > 1 else None,
        image_dir=str(spec.image_dir.resolve()),
        mask_dir=str(spec.mask_dir.resolve()),
    )


def map_geometry(found: Discovery, original_size: tuple[int, int], settings: SaliencyRunSpec) -> MapGeometry:
    """Where the result's grid lies on its image of (H, W) ``original_size``."""
    grid, scales = found.grid, found.scales
    if settings.preprocess == "resize":
        seen = (round(grid[0] * scales[0]), round(grid[1] * scales[1]))
    else:
        width, height = capped_size(original_size[1], original_size[0], settings.run.max_size)
        seen = (height, width)
    return MapGeometry(grid, scales, seen, original_size, settings.preprocess)


def image_saliency(found: Discovery, path: Path, grey: np.ndarray, settings: SaliencyRunSpec, mapper: SaliencyMapper) -> np.ndarray:
    """The (H, W) map of one image's result; LostError when the mask's size is not the image's."""
    width, height = read_image_size(path)
    if grey.shape != (height, width):
        raise LostError(
            f"its ground-truth mask is {grey.shape[1]}x{grey.shape[0]} but the image is {width}x{height}; "
            "replace the mask or remove the image"
        )
    image = np.asarray(load_rgb(path)) if settings.bilateral else np.zeros((0, 0, 3), dtype=np.uint8)
    options = SaliencyOptions(settings.bilateral, settings.mode or "single")
    return mapper.compute(found.result, map_geometry(found, (height, width), settings), options, image)


def map_png(saliency: np.ndarray) -> bytes:
    """An (H, W) map as an 8-bit grey PNG: ``round(255 * clip(map, 0, 1))``."""
    levels = np.rint(np.clip(np.asarray(saliency, dtype=np.float64), 0.0, 1.0) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(levels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def process(
    spec: SaliencySpec,
    journal: Journal,
    extractor: FeatureExtractor,
    config: DiscoveryConfig,
    device: torch.device,
    settings: SaliencyRunSpec,
    mapper: SaliencyMapper,
    maps_dir: Path,
) -> int:
    """Maps and counts of the images the journal lacks, journaled batch by batch (a kill loses at
    most the batch in flight), with the running score of every finished image on the progress
    bar. Returns how many images it processed."""
    with writing(maps_dir):
        maps_dir.mkdir(parents=True, exist_ok=True)
    meter = SaliencyMeter(settings.protocol)
    todo = []
    for record in spec.records:
        if record.name in journal.values and (maps_dir / f"{record.name}.png").is_file():
            meter.add(ImageCounts.from_json(journal.values[record.name]))
        else:
            todo.append(record)
    with tqdm(total=len(spec.records), initial=len(spec.records) - len(todo), unit="img") as bar:
        for batch in discover_batches(extractor, todo, config, device):
            finished, errors, values = {}, {}, {}
            for found in batch:
                record = todo[found.index]
                try:
                    if found.error is not None:
                        raise LostError(found.error)
                    grey = read_grey_mask(spec.masks[record.name])
                    saliency = image_saliency(found, record.path, grey, settings, mapper)
                except LostError as exc:
                    errors[record.name] = str(exc)
                    tqdm.write(f"skipped {record.name}: {exc}")
                    continue
                counts = image_counts(saliency, ground_truth_mask(grey, settings.protocol), settings.protocol)
                atomic_write(maps_dir / f"{record.name}.png", map_png(saliency))
                finished[record.name], values[record.name] = found.box, counts.to_json()
                meter.add(counts)
            journal.record(finished, errors, values)
            bar.update(len(batch))
            if meter.count:
                summary = meter.summary()
                bar.set_postfix(protocol=settings.protocol, iou=f"{summary['iou']:.3f}", maxF=f"{summary['max_fbeta']:.3f}")
    return len(todo)


def write_outputs(
    folder: Path, spec: SaliencySpec, journal: Journal, settings: SaliencyRunSpec, timing: dict[str, float]
) -> tuple[dict, int]:
    """metrics.json (with ``timing``, this invocation's) and skipped.txt of the finished run, in
    record order; returns the summary and how many images were skipped."""
    meter = SaliencyMeter(settings.protocol)
    per_image = {}
    for record in spec.records:
        if record.name in journal.values:
            per_image[record.name] = meter.add(ImageCounts.from_json(journal.values[record.name])).to_json()
    errors = {**dict(spec.skipped), **{name: reason for name, reason in journal.errors.items() if name not in per_image}}
    summary = meter.summary()
    content = {**summary, "dataset": spec.name, "skipped": len(errors), "timing": timing}
    write_json(folder / "metrics.json", {**content, "per_image": per_image, "settings": settings.settings()}, indent=1)
    atomic_write(folder / "skipped.txt", "".join(f"{name}\t{reason}\n" for name, reason in errors.items()).encode("utf-8"))
    return summary, len(errors)


def input_folder(args: argparse.Namespace, spec: SaliencySpec) -> str:
    """Where the runs on this input live: the data set's name, or for ``--image_dir`` the folder's
    name and the short hash of its resolved path (two folders of one name never share runs)."""
    return spec.name if args.image_dir is None else input_folder_name(str(spec.image_dir.resolve()))


def run(args: argparse.Namespace) -> int:
    """Run the evaluation as asked; returns the exit status."""
    started = time.perf_counter()
    method = method_entry(args.method)
    mapper = mapper_for_method(method, SaliencyOptions(args.bilateral, args.mode or "single"))
    spec = load_inputs(args)
    settings = run_spec(args, spec, mapper)
    folder = Path(args.output_dir) / input_folder(args, spec) / settings.experiment_name()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = load_backbone(settings.run.backbone, device)
    extractor = FeatureExtractor.for_spec(model, settings.run.backbone)
    if method.prepare is not None:
        method.prepare(settings.run.params, extractor.num_heads)
    print(f"Running {method.title} saliency on {spec.name} ({len(spec.records)} images, exp: {folder.name}, device: {device})")
    for name, reason in spec.skipped:
        print(f"skipped {name}: {reason}")
    journal = Journal(folder / "journal.jsonl", settings.settings(), overwrite=args.overwrite)
    config = DiscoveryConfig(
        method=method.name,
        params=settings.run.params,
        batch_size=args.batch_size or default_batch_size(device),
        num_workers=args.num_workers if args.num_workers is not None else default_workers(device),
        precision=settings.run.precision,
        max_size=settings.run.max_size,
        preprocess=settings.preprocess,
    )
    try:
        processed = process(spec, journal, extractor, config, device, settings, mapper, folder / "maps")
        seconds = time.perf_counter() - started
        timing = {"seconds": seconds, "images_processed": processed, "images_per_second": processed / seconds}
        summary, skipped = write_outputs(folder, spec, journal, settings, timing)
    finally:
        journal.close()
    print(f"{method.title} on {spec.name}, {summary_line(summary)}, {skipped} skipped")
    print(f"Saliency maps saved in {folder / 'maps'}, metrics in {folder / 'metrics.json'}")
    if args.strict and skipped:
        print(f"error: {skipped} images were skipped (see {folder / 'skipped.txt'})", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_cli(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
