"""Discover the objects of one image, a folder of images or a whole data set, with any method.

    python main_lost.py --image_path examples/chelsea.jpg --visualize pred
    python main_lost.py --dataset VOC07 --set trainval
    python main_lost.py --dataset VOC07 --set trainval --method dinoseg
    torchrun --nproc_per_node 2 main_lost.py --dataset VOC07 --set trainval

A data-set run writes ``<output_dir>/<DATASET>_<SET>/<exp>/`` with ``preds.pkl`` and
``preds.json`` (image name → box ``[x1, y1, x2, y2]``, x2/y2 exclusive; for a multi-object method
such as ``--method maskcut`` its boxes, best first, with their scores, see ``safe_files``),
``results.txt`` (CorLoc of the top box),
``skipped.txt`` (images that could not be read) and the journal that lets a killed run resume.
With ``--save_masks`` it also writes ``instances.json``, every object's mask as a COCO instance
file (see ``lost.io.instances``), from the mask journal ``masks.jsonl`` kept beside the boxes'.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from lost import report
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
from lost.data.datasets import DatasetSpec, ImageRecord, load_dataset, single_image_records
from lost.engine.cutler_run import cutler_discovery_batches
from lost.engine.discovery import Discovery, DiscoveryConfig, discover_batches
from lost.errors import LostError, run_cli
from lost.eval.metrics import CorLocMeter, evaluate_corloc, is_correct_localization
from lost.io.instances import InstanceImage, write_instances
from lost.io.journal import Journal, merge_journals
from lost.io.mask_journal import MaskJournal, mask_index, mask_journal_name, mask_line, read_mask_line
from lost.io.safe_files import ScoredBoxes, atomic_write, write_predictions, write_scored_predictions
from lost.methods import METHODS, PICTURE_KINDS, Method, method_entry
from lost.methods.cutler_preset import FIXED_SIZE, PRESETS
from lost.refine.crf import check_available as check_crf_available
from lost.refine.masks import REFINEMENTS, check_refinement, refine_masks
from lost.run_spec import RunSpec, input_identity
from lost.viz.pictures import save_png


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="LOST: discover the objects of images without labels.")
    add_backbone_flags(parser)

    data = parser.add_argument_group("input")
    data.add_argument("--dataset", default="VOC07", choices=["VOC07", "VOC12", "COCO20k"])
    data.add_argument("--set", default="train", choices=["val", "train", "trainval", "test"])
    data.add_argument("--image_path", default=None, help="one image (or a folder of images) instead of a data set")
    data.add_argument("--datasets_root", default="datasets", help="folder holding VOC2007, VOC2012 and COCO")
    data.add_argument("--no_hard", action="store_true", help="VOC: drop truncated/difficult objects and images left with none")

    method = parser.add_argument_group("method")
    method.add_argument("--method", default=None, choices=list(METHODS), help="discovery method (default: lost)")
    method.add_argument("--dinoseg", action="store_true", help="alias of --method dinoseg (the published flag)")
    add_method_flags(parser)

    run = parser.add_argument_group("run")
    run.add_argument("--output_dir", default="outputs")
    run.add_argument("--no_evaluation", action="store_true", help="do not compute CorLoc")
    run.add_argument("--visualize", default=None, choices=PICTURE_KINDS, help="write one PNG per image (a kind the method does not draw gives pred; masks: every object's mask)")
    masks = parser.add_argument_group("masks")
    masks.add_argument("--refine", default=None, choices=REFINEMENTS, help="refine every object's mask at full resolution: crf (CutLER's dense CRF) or bilateral (TokenCut's and FOUND's solver)")
    masks.add_argument("--preset", default=None, choices=PRESETS, help="cutler: CutLER's MaskCut pseudo-masks exactly (with --method maskcut)")
    masks.add_argument("--fixed_size", default=None, type=int, help=f"--preset cutler: the side every image is resized to (default: {FIXED_SIZE})")
    masks.add_argument("--postprocess_workers", default=None, type=int, help="--preset cutler: CRF processes beside the backbone (default: 0 on CPU, up to 8 on GPU)")
    run.add_argument("--save_masks", action="store_true", help="also write instances.json: every object's mask as a COCO instance file (RLE)")
    add_engine_flags(run)
    run.add_argument("--overwrite", action="store_true", help="start over instead of resuming an earlier run")
    run.add_argument("--strict", action="store_true", help="exit non-zero when an image had to be skipped")
    run.add_argument("--no_report", action="store_true", help="do not write report.html (per-class CorLoc, misses, gallery)")
    return parser.parse_args(argv)


@dataclass(frozen=True)
class Shard:
    """This process's part of the images: records[rank::world]."""

    rank: int
    world: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def journal_name(self) -> str:
        return "journal.jsonl" if self.world == 1 else f"journal.rank{self.rank}-of-{self.world}.jsonl"


def start_processes(requested_device: str | None) -> tuple[Shard, torch.device]:
    """Join the torchrun process group when launched by torchrun; pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = torch.cuda.is_available() if requested_device is None else requested_device.startswith("cuda")
    if world == 1:
        return Shard(0, 1), torch.device(requested_device or ("cuda" if use_cuda else "cpu"))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=timedelta(days=7))
    if use_cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    return Shard(dist.get_rank(), dist.get_world_size()), device


def load_inputs(args: argparse.Namespace) -> tuple[DatasetSpec, str, bool]:
    """The records to process, what identifies them (the data set's name, or the resolved path
    of the folder or image) and whether they are a single image file."""
    if args.image_path is not None:
        path = Path(args.image_path)
        records = single_image_records(path)
        return DatasetSpec(name=path.name, records=records), input_identity(path), path.is_file()
    spec = load_dataset(args.dataset, args.set, Path(args.datasets_root), args.no_hard)
    return spec, spec.name, False


def chosen_method(args: argparse.Namespace) -> str:
    """The method named by ``--method``, or by the published alias ``--dinoseg``."""
    if args.dinoseg and args.method not in (None, "dinoseg"):
        raise LostError(f"--dinoseg and --method {args.method} disagree: give one of them")
    return "dinoseg" if args.dinoseg else args.method or "lost"


def run_spec(args: argparse.Namespace, input_name: str) -> RunSpec:
    """The settings of the command line that change results; LostError for a flag that does not
    apply to the chosen method or backbone."""
    method = method_entry(chosen_method(args))
    backbone = backbone_spec(args, method)
    check_mask_options(args, method)
    max_size = None if args.preset else args.max_size or None
    return RunSpec(
        input_name, backbone, method.name, params_from_args(method, args), args.precision, max_size, args.refine,
        args.preset, args.fixed_size,
    )


def check_mask_options(args: argparse.Namespace, method: Method) -> None:
    """LostError for mask options that do not go together; a missing package of ``--refine crf``
    or of the CutLER preset stops the run here, before any image."""
    if args.fixed_size is not None and args.preset is None:
        raise LostError("--fixed_size applies to --preset cutler only")
    if args.postprocess_workers is not None and args.preset is None:
        raise LostError("--postprocess_workers applies to --preset cutler only")
    if args.preset is not None:
        if method.name != "maskcut":
            raise LostError(f"--preset {args.preset} is CutLER's MaskCut: use it with --method maskcut, not {method.name}")
        if args.refine is not None:
            raise LostError(f"--preset {args.preset} refines its masks with its own CRF: drop --refine {args.refine}")
        if args.fixed_size is not None and args.fixed_size < 1:
            raise LostError(f"--fixed_size {args.fixed_size}: must be positive")
        check_crf_available()
    if args.refine is not None:
        check_refinement(args.refine)


def head_warning(settings: RunSpec, extractor: FeatureExtractor) -> str | None:
    """The warning for a head file on a backbone the method's released head was not trained on."""
    head = settings.entry.released_head
    if head is None:
        return None
    return head.warning(settings.backbone, settings.params, extractor.model.embed_dim)


def visualize(kind: str, method: Method, record: ImageRecord, found: Discovery, folder: Path, max_size: int | None) -> None:
    """Write the ``kind`` picture of one image's result (``pred`` when the method has no such kind)."""
    picture_kind = kind if kind in method.pictures else "pred"
    save_png(method.picture(kind)(record.path, found, max_size), folder, record.name, picture_kind)


def evaluated_corloc(records: list[ImageRecord], boxes: dict[str, np.ndarray]) -> CorLocMeter:
    """CorLoc over the records that have a box (skipped images are counted apart)."""
    return evaluate_corloc([record for record in records if record.name in boxes], boxes)


def discovery_config(args: argparse.Namespace, spec: RunSpec, device: torch.device) -> DiscoveryConfig:
    """The engine settings of the run, with the device's defaults filled in."""
    return DiscoveryConfig(
        method=spec.method,
        params=spec.params,
        batch_size=args.batch_size or default_batch_size(device),
        num_workers=args.num_workers if args.num_workers is not None else default_workers(device),
        precision=spec.precision,
        max_size=spec.max_size,
        masks=args.save_masks or args.visualize == "masks",
        mask_postprocess=None if spec.refine is None else functools.partial(refine_masks, kind=spec.refine),
    )


def discovery_stream(
    args: argparse.Namespace, spec: RunSpec, extractor: FeatureExtractor, device: torch.device, config: DiscoveryConfig
) -> Callable[[list[ImageRecord]], Iterator[list[Discovery]]]:
    """``stream(records) -> batches of Discovery``: the engine's under ``config``, or CutLER's
    preset pipeline with its batch size and decoding workers."""
    if spec.preset is None:
        return lambda records: discover_batches(extractor, records, config, device)
    params = spec.params
    workers = args.postprocess_workers if args.postprocess_workers is not None else default_workers(device) - 1
    return lambda records: cutler_discovery_batches(
        extractor, records, device, config.batch_size, config.num_workers, max(0, workers),
        spec.fixed_size or FIXED_SIZE, params.tau, params.max_objects, params.eigensolver,
    )


def process_shard(
    records: list[ImageRecord],
    journal: Journal,
    stream: Callable[[list[ImageRecord]], Iterator[list[Discovery]]],
    config: DiscoveryConfig,
    show_corloc: bool,
    visualize_kind: str | None,
    vis_folder: Path | None,
    show_progress: bool,
    masks: MaskJournal | None = None,
) -> int:
    """Discover the boxes (and with a mask journal the masks) of the records the journals lack,
    journaling each batch as it ends, so that a kill loses at most the batch in flight. Returns
    how many images it processed."""
    todo = [record for record in records if not is_finished(record.name, journal, masks)]
    meter = evaluated_corloc(records, journal.boxes) if show_corloc else None
    with tqdm(total=len(records), initial=len(records) - len(todo), unit="img", disable=not show_progress) as bar:
        for batch in stream(todo):
            finished: dict[str, np.ndarray | ScoredBoxes] = {}
            errors: dict[str, str] = {}
            mask_lines = []
            for found in batch:
                record = todo[found.index]
                if found.error is not None:
                    errors[record.name] = found.error
                    tqdm.write(f"skipped {record.name}: {found.error}")
                    continue
                finished[record.name] = ScoredBoxes(found.boxes, found.scores) if found.ranked else found.box
                if masks is not None:
                    mask_lines.append(mask_line(record.name, found.masks, found.scores))
                if meter is not None and record.gt_boxes is not None:
                    meter.update(is_correct_localization(found.box, record.gt_boxes))
                if visualize_kind is not None and vis_folder is not None:
                    visualize(visualize_kind, config.entry, record, found, vis_folder, config.max_size)
            if masks is not None:
                masks.record(mask_lines)
            journal.record(finished, errors)
            bar.update(len(batch))
            if meter is not None and meter.count:
                bar.set_postfix(corloc=f"{meter.value:.1f}")
    return len(todo)


def is_finished(name: str, journal: Journal, masks: MaskJournal | None) -> bool:
    """Whether an image has its box, and its masks when the run saves them."""
    return journal.is_done(name) and (masks is None or name in masks.done)


def write_outputs(
    run_folder: Path,
    records: list[ImageRecord],
    boxes: dict[str, np.ndarray],
    errors: dict[str, str],
    with_corloc: bool,
    detections: dict[str, ScoredBoxes] | None = None,
) -> CorLocMeter | None:
    """preds.pkl / preds.json in record order (every image's boxes and scores when `detections`,
    those of a multi-object method, are given), skipped.txt (name, tab, reason), and results.txt
    with the CorLoc of the top boxes over the evaluated images and the counts of evaluated and
    skipped ones."""
    ordered = {record.name: boxes[record.name] for record in records if record.name in boxes}
    if detections:
        write_scored_predictions(run_folder, {name: detections[name] for name in ordered})
    else:
        write_predictions(run_folder, ordered)
    skipped = [f"{name}\t{reason}\n" for name, reason in errors.items() if name not in boxes]
    atomic_write(run_folder / "skipped.txt", "".join(skipped).encode("utf-8"))
    print(f"Predictions saved at {run_folder / 'preds.pkl'} ({len(ordered)} images, {len(skipped)} skipped)")
    if not with_corloc:
        return None
    meter = evaluated_corloc(records, ordered)
    report = f"corloc,{meter.value:.1f},,\nevaluated,{meter.count},,\nskipped,{len(skipped)},,\n"
    atomic_write(run_folder / "results.txt", report.encode("utf-8"))
    print(f"{meter.summary()}, {len(skipped)} skipped")
    return meter


def run(args: argparse.Namespace) -> int:
    """Run the chosen method as asked; returns the exit status."""
    exp = run_spec(args, "").experiment_name()
    shard, device = start_processes(args.device)
    spec, identity, single_file = load_inputs(args)
    settings = run_spec(args, identity)
    model = load_backbone(settings.backbone, device)
    extractor = FeatureExtractor.for_spec(model, settings.backbone)
    if settings.entry.prepare is not None:
        settings.entry.prepare(settings.params, extractor.num_heads)
    warning = head_warning(settings, extractor)
    if warning is not None and shard.is_main:
        print(f"warning: {warning}", file=sys.stderr)
    root = Path(args.output_dir) if single_file else Path(args.output_dir) / settings.input_folder()
    run_folder = root / exp
    vis_folder = root / "visualizations" / exp if args.visualize else None
    if shard.is_main:
        print(f"Running {settings.entry.title} on {spec.name} ({len(spec.records)} images, exp: {exp}, device: {device})")

    for name, reason in spec.skipped if shard.is_main else ():
        print(f"skipped {name}: {reason}")
    records = spec.records[shard.rank :: shard.world]
    started = time.perf_counter()
    config = discovery_config(args, settings, device)
    with Journal(run_folder / shard.journal_name(), settings.settings(), overwrite=args.overwrite or single_file) as journal:
        masks = MaskJournal(mask_journal_name(journal.path), settings.settings(), args.overwrite or single_file) if args.save_masks else None
        processed = process_shard(
            records,
            journal,
            discovery_stream(args, settings, extractor, device, config),
            config,
            show_corloc=not args.no_evaluation,
            visualize_kind=args.visualize,
            vis_folder=vis_folder,
            show_progress=shard.is_main and not single_file,
            masks=masks,
        )
    if shard.world > 1:
        dist.barrier()
    if not shard.is_main:
        return 0

    paths = [run_folder / Shard(rank, shard.world).journal_name() for rank in range(shard.world)]
    boxes, errors, detections = merge_journals(paths)
    errors = {**dict(spec.skipped), **errors}
    if single_file:
        for record in spec.records:
            print(image_line(record.name, boxes, errors, detections))
    has_gt = any(record.gt_boxes is not None for record in spec.records)
    evaluated = has_gt and not args.no_evaluation
    write_outputs(run_folder, spec.records, boxes, errors, evaluated, detections)
    if args.save_masks:
        mask_journals = [mask_journal_name(path) for path in paths]
        write_instance_file(run_folder, spec.records, boxes, mask_journals, image_root(args), settings.settings())
    if evaluated and not args.no_report:
        seconds = time.perf_counter() - started
        write_report(run_folder, spec, boxes, seconds, processed / seconds if processed else None)
    if vis_folder is not None:
        print(f"Visualizations saved in {vis_folder}")
    if args.strict and errors.keys() - boxes.keys():
        print(f"error: {len(errors.keys() - boxes.keys())} images were skipped (see {run_folder / 'skipped.txt'})", file=sys.stderr)
        return 1
    return 0


def image_root(args: argparse.Namespace) -> Path | None:
    """The folder that ``file_name`` is relative to: ``--image_path`` (a file's folder); None for
    a data set, whose images are named by their file name (VOC's JPEGImages, COCO's train2014)."""
    if args.image_path is None:
        return None
    path = Path(args.image_path)
    return path if path.is_dir() else path.parent


def write_instance_file(
    run_folder: Path,
    records: list[ImageRecord],
    boxes: dict[str, np.ndarray],
    journals: list[Path],
    root: Path | None,
    run: dict,
) -> None:
    """``instances.json`` from the mask journals, streamed in record order (image id: the 1-based
    position in the records), for the images that have their box."""
    index = mask_index(journals)

    def images():
        for position, record in enumerate(records, start=1):
            if record.name in boxes and record.name in index:
                line = read_mask_line(index[record.name])
                file_name = record.path.relative_to(root).as_posix() if root is not None else record.path.name
                yield InstanceImage(position, file_name, line["height"], line["width"], line["masks"], line["scores"])

    path = run_folder / "instances.json"
    info = {"description": "LOST: masks of the objects found in each image", "run": run}
    print(write_instances(path, images, info).line(path))


def image_line(
    name: str, boxes: dict[str, np.ndarray], errors: dict[str, str], detections: dict[str, ScoredBoxes]
) -> str:
    """What a one-image run prints: the box, every box with its score, or why it was skipped."""
    if name in detections:
        found = detections[name]
        listed = ", ".join(f"{box.tolist()} ({score:.3f})" for box, score in zip(found.boxes, found.scores, strict=True))
        return f"{name}: boxes [x1, y1, x2, y2] (score), best first = {listed}"
    return f"{name}: box [x1, y1, x2, y2] = {boxes[name].tolist()}" if name in boxes else f"{name}: {errors[name]}"


def write_report(
    run_folder: Path, spec: DatasetSpec, boxes: dict[str, np.ndarray], seconds: float, images_per_second: float | None
) -> None:
    """``report.html`` and its pictures in the run folder (see report.py). The run's outputs are
    written by then: a report that cannot be written is a warning, not a failed run."""
    try:
        info = dataclasses.replace(
            report.run_info(run_folder / "preds.pkl", spec.name), seconds=seconds, images_per_second=images_per_second
        )
        report.build_report(report.ReportRun(info, tuple(report.report_images(spec.records, boxes))), run_folder)
    except LostError as error:
        print(f"warning: report.html not written ({error}); the predictions are saved", file=sys.stderr)
        return
    print(f"Report saved at {run_folder / 'report.html'}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run_cli(lambda: run(args))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
