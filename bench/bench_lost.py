"""Benchmark of the discovery engine against a one-image-at-a-time loop like the published code.

    python -m bench.bench_lost                       # ViT-S/16, 64 VOC-like images, CPU rows
    python -m bench.bench_lost --patch_size 8 --images 16
    python -m bench.bench_lost --qk_gain 8               # peaked attention, like a trained ViT's
    python -m bench.bench_lost --device cuda --images 2000
    python -m bench.bench_lost --memory_check        # peak RSS of a 200- and a 2,000-image run
    python -m bench.bench_lost --profile             # where the time of a bf16 run goes
    python -m bench.bench_lost --methods lost,dinoseg   # a row block per method of the method table
    python -m bench.bench_lost --methods lost,tokencut,maskcut --images 16 --repeats 1
    python -m bench.bench_lost --methods lost,saliency-tokencut,saliency-found-bs   # saliency runs
    python -m bench.bench_lost --methods cutler --patch_size 8 --qk_gain 8 --images 8 --repeats 1

It writes VOC-like JPEGs (the sizes that dominate VOC07 and a tail of others) and a random-weight
checkpoint into a temporary folder, then runs every configuration in its own process (so that
peak RSS is that configuration's own), whole runs from start-up to the last box, ``--repeats``
times round after round, keeps the median time of each, and prints:

    config | images/s | speed-up vs baseline | peak RSS | identical boxes vs reference (%) | mean IoU vs reference | reference

The baseline decodes in the main thread, registers a forward hook for every image, runs the full
network with explicit attention and computes LOST on the whole similarity matrix, image by image.
Speed-ups are all against that LOST baseline, so that methods compare with each other; the boxes
of each row are compared with its method's reference: the baseline for LOST, a published-style
loop where the method has one (``REFERENCE_LOOPS``; TokenCut: the same keys, then the dense float64
``eigh(D - W, D)`` of its published code, image by image), else the method's own fp32 engine row
(MaskCut: its top box). The CutLER preset (``--methods cutler``: 480 x 480 input, its masks
after the CRF) is compared with CutLER's ``maskcut.py`` as transcribed in tests/published_cutler.py,
one image at a time with dense ``eigh`` and the CRF in the main process; its two agreement
columns are then over masks (share of identical masks, mean mask IoU), and a last line gives the
share of the preset's cuts solved by Lanczos, by the dense solve, or not solved again.

A ``saliency-<method>`` entry (``-bs`` added: with ``--bilateral``) is a whole
``main_saliency_evaluation.py`` run over the same images, with masks of one ellipse each: maps,
PNGs and metrics (protocol ``tokencut`` for TokenCut, ``found`` otherwise; FOUND's head random),
timed from the script's start-up (its ``metrics.json`` timing) like the engine rows; its boxes are
compared with the method's fp32 engine row at ``--batch_size``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import torch
from PIL import Image, ImageDraw

from lost.backbones import FeatureExtractor, build_model, get_model, last_selfattention
from lost.data.datasets import single_image_records
from lost.data.images import image_to_tensor, pad_to_multiple
from lost.engine.cutler_run import cutler_pseudo_masks
from lost.engine.discovery import DiscoveryConfig, discover
from lost.eval.metrics import box_iou
from lost.methods.found import FoundParams, new_found_head, save_found_head
from lost.methods.cutler_preset import FIXED_SIZE
from tests.published_cutler import published_cutler
from tests.published_lost import published_style_lost
from tests.published_tokencut import published_style_tokencut
from tests.synthetic_images import VOC_SIZES, make_images

ROOT = Path(__file__).resolve().parents[1]


def make_masks(images: Path, masks: Path) -> None:
    """A grey PNG per image: the ellipse inscribed in its central half, 255 on 0."""
    masks.mkdir(parents=True, exist_ok=True)
    for path in sorted(images.glob("*.jpg")):
        with Image.open(path) as image:
            width, height = image.size
        mask = Image.new("L", (width, height))
        ImageDraw.Draw(mask).ellipse([width // 4, height // 4, 3 * width // 4, 3 * height // 4], fill=255)
        mask.save(masks / f"{path.stem}.png")


def run_saliency(args: argparse.Namespace) -> tuple[dict[str, list], float, int]:
    """One main_saliency_evaluation.py run of ``saliency-<method>[-bs]`` in a child process:
    (boxes by file name, its own seconds, its peak RSS)."""
    method, bilateral = args.method.removeprefix("saliency-").removesuffix("-bs"), args.method.endswith("-bs")
    output = args.result.with_suffix(".out")
    command = [
        sys.executable, str(ROOT / "main_saliency_evaluation.py"), "--image_dir", str(args.folder),
        "--mask_dir", str(args.folder.parent / "masks"), "--method", method,
        "--protocol", "tokencut" if method == "tokencut" else "found", "--arch", args.arch,
        "--patch_size", str(args.patch_size), "--pretrained_weights", str(args.checkpoint), "--device", args.device,
        "--batch_size", str(args.batch_size), "--num_workers", str(args.num_workers), "--output_dir", str(output),
        "--overwrite", *(["--bilateral"] if bilateral else []),
        *(["--found_weights", str(args.checkpoint.with_name("found_head.pt"))] if method == "found" else []),
    ]
    finished = subprocess.run(command, check=False, cwd=ROOT, capture_output=True, text=True)
    if finished.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{finished.stderr[-3000:]}")
    run = next((output / args.folder.name).iterdir())
    lines = [json.loads(line) for line in (run / "journal.jsonl").read_text().splitlines()[1:]]
    boxes = {f"{line['name']}.jpg": line["box"] for line in lines if "box" in line}
    seconds = json.loads((run / "metrics.json").read_text())["timing"]["seconds"]
    return boxes, seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


def random_state_dict(arch: str, patch_size: int, qk_gain: float) -> dict[str, torch.Tensor]:
    """Random ViT weights with the query and key projections multiplied by ``qk_gain``.

    Random weights give nearly uniform attention (logits' standard deviation about 0.1), where
    low precision can hardly move a box; a trained ViT's attention is peaked. A gain g multiplies
    every logit by g**2: g = 8 gives logits with a standard deviation of about 8.
    """
    state = build_model(arch, patch_size).state_dict()
    for name, tensor in state.items():
        if name.endswith("attn.qkv.weight"):
            tensor[: 2 * tensor.shape[1]] *= qk_gain
    return state


def published_style_keys(
    model: torch.nn.Module, path: Path, patch: int, device: str
) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int]]:
    """One image as the published code feeds it: decoded in the main thread, a forward hook
    registered for it, the full network with explicit attention. Returns the last block's keys
    (N, d) float32 on the CPU, the grid (h, w) and the unpadded (H, W)."""
    return published_style_image_keys(model, Image.open(path).convert("RGB"), patch, device)


def published_style_image_keys(
    model: torch.nn.Module, image: Image.Image, patch: int, device: str
) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int]]:
    """:func:`published_style_keys` of a decoded PIL image."""
    tensor = image_to_tensor(image)
    size = tuple(tensor.shape[1:])
    padded = pad_to_multiple(tensor, patch).to(device)
    captured = {}
    hook = model.blocks[-1].attn.qkv.register_forward_hook(lambda module, inputs, output, store=captured: store.update(qkv=output))
    with torch.no_grad():
        attention = last_selfattention(model, padded[None])
    hook.remove()
    tokens, heads = attention.shape[2], attention.shape[1]
    qkv = captured["qkv"].reshape(1, tokens, 3, heads, -1).permute(2, 0, 3, 1, 4)
    keys = qkv[1].transpose(1, 2).reshape(1, tokens, -1)[0, 1:].float().cpu()
    return keys, (padded.shape[1] // patch, padded.shape[2] // patch), size


def run_baseline(folder: Path, checkpoint: Path, arch: str, patch: int, device: str) -> dict[str, list]:
    """One image at a time: decode in the main thread, hook, explicit attention in every block,
    full matrix."""
    model = get_model(arch, patch, device=device, pretrained_weights=str(checkpoint))
    for block in model.blocks:
        block.attn.fused_attn = False
    boxes = {}
    for path in sorted(folder.glob("*.jpg")):
        keys, grid, size = published_style_keys(model, path, patch, device)
        boxes[path.name] = published_style_lost(keys, grid, patch, size, 100)[0]
    return boxes


def run_tokencut_reference(folder: Path, checkpoint: Path, arch: str, patch: int, device: str) -> dict[str, list]:
    """TokenCut one image at a time as published: the baseline's keys, then the dense float64
    generalized eigenproblem on the whole graph (tau 0.2, eps 1e-5, binary)."""
    model = get_model(arch, patch, device=device, pretrained_weights=str(checkpoint))
    boxes = {}
    for path in sorted(folder.glob("*.jpg")):
        keys, grid, size = published_style_keys(model, path, patch, device)
        boxes[path.name] = published_style_tokencut(keys, grid, patch, size)[0]
    return boxes


def encoded_masks(masks: np.ndarray) -> list[dict]:
    """(K, H, W) bool -> K pycocotools RLEs with str counts (JSON)."""
    encoded = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    return [{"size": rle["size"], "counts": rle["counts"].decode("ascii")} for rle in encoded]


def run_cutler_reference(folder: Path, checkpoint: Path, arch: str, patch: int, device: str) -> dict[str, dict]:
    """CutLER's ``maskcut.py`` one image at a time (tests/published_cutler.py): decoded in the
    main thread, resized to 480 x 480 with LANCZOS, keys by a hook, dense ``eigh`` on every cut,
    then the CRF of every mask, in the main process."""
    model = get_model(arch, patch, device=device, pretrained_weights=str(checkpoint))
    for block in model.blocks:
        block.attn.fused_attn = False
    found = {}
    for path in sorted(folder.glob("*.jpg")):
        image = Image.open(path).convert("RGB")
        image_new = image.resize((FIXED_SIZE, FIXED_SIZE), Image.LANCZOS)
        keys, _, _ = published_style_image_keys(model, image_new, patch, device)
        masks, _ = published_cutler(image_new, keys.T, patch, (image.height, image.width))
        found[path.name] = {"masks": encoded_masks(masks), "solvers": ["dense"] * len(masks)}
    return found


def run_cutler_preset(folder: Path, checkpoint: Path, arch: str, patch: int, device: str, args: argparse.Namespace) -> dict[str, dict]:
    """The preset (``lost.engine.cutler_run``): batched keys, Lanczos where it decides the cut,
    the CRF in ``--crf_workers`` worker processes while the backbone runs."""
    model = get_model(arch, patch, device=device, pretrained_weights=str(checkpoint))
    records = single_image_records(folder)
    found = {}
    results = cutler_pseudo_masks(
        FeatureExtractor(model, arch, patch), records, device, args.batch_size, args.num_workers, args.crf_workers
    )
    for result in results:
        found[records[result.index].name] = {"masks": encoded_masks(result.masks), "solvers": list(result.solvers)}
    return found


REFERENCE_LOOPS: dict[str, object] = {"tokencut": run_tokencut_reference, "cutler": run_cutler_reference}
"""Method name -> a one-image-at-a-time loop computing that method as its published code does:
``loop(folder, checkpoint, arch, patch, device) -> {image name: box}``."""


def run_engine(folder: Path, checkpoint: Path, arch: str, patch: int, device: str, config: DiscoveryConfig) -> dict[str, list]:
    """The engine over the folder, as main_lost runs it."""
    model = get_model(arch, patch, device=device, pretrained_weights=str(checkpoint))
    extractor = FeatureExtractor(model, arch, patch)
    records = single_image_records(folder)
    return {records[found.index].name: found.box.tolist() for found in discover(extractor, records, config, device)}


def worker(args: argparse.Namespace) -> None:
    """Run one configuration and write its boxes, time and peak RSS as JSON."""
    torch.manual_seed(0)
    if args.worker == "saliency":
        boxes, seconds, peak_rss = run_saliency(args)
        args.result.write_text(json.dumps({"boxes": boxes, "seconds": seconds, "peak_rss": peak_rss}))
        return
    start = time.perf_counter()
    if args.worker == "baseline":
        boxes = run_baseline(args.folder, args.checkpoint, args.arch, args.patch_size, args.device)
    elif args.worker == "reference":
        boxes = REFERENCE_LOOPS[args.method](args.folder, args.checkpoint, args.arch, args.patch_size, args.device)
    elif args.method == "cutler":
        boxes = run_cutler_preset(args.folder, args.checkpoint, args.arch, args.patch_size, args.device, args)
    else:
        head = FoundParams(str(args.checkpoint.with_name("found_head.pt"))) if args.method == "found" else None
        config = DiscoveryConfig(
            method=args.method, params=head, batch_size=args.batch_size, num_workers=args.num_workers, precision=args.precision
        )
        boxes = run_engine(args.folder, args.checkpoint, args.arch, args.patch_size, args.device, config)
    seconds = time.perf_counter() - start
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    args.result.write_text(json.dumps({"boxes": boxes, "seconds": seconds, "peak_rss": peak_rss}))


def run_config(common: list[str], name: str, extra: list[str], scratch: Path) -> dict:
    """One configuration in a fresh process; returns its JSON result plus its name."""
    result = scratch / f"{name.replace(' ', '_').replace('/', '_')}.json"
    subprocess.run([sys.executable, "-m", "bench.bench_lost", *common, *extra, "--result", str(result)], check=True, cwd=ROOT)
    return {"name": name, **json.loads(result.read_text())}


def run_interleaved(common: list[str], configs: list[tuple[str, list[str]]], scratch: Path, repeats: int) -> list[dict]:
    """Every configuration ``repeats`` times, round after round so that a slow spell of the
    machine hits all of them alike; each keeps its median time and its largest peak RSS."""
    runs: dict[str, list[dict]] = {name: [] for name, _ in configs}
    for _ in range(repeats):
        for name, extra in configs:
            runs[name].append(run_config(common, name, extra, scratch))
    return [
        {
            **results[0],
            "seconds": float(np.median([result["seconds"] for result in results])),
            "peak_rss": max(result["peak_rss"] for result in results),
        }
        for results in runs.values()
    ]


def compare_masks(found: dict[str, dict], reference: dict[str, dict]) -> tuple[float, float]:
    """(% of masks equal to the reference's, mean IoU with the reference's masks; two empty
    masks count as equal with IoU 1), over every mask of every image."""
    same, ious = [], []
    for name in sorted(reference):
        for mine, theirs in zip(found[name]["masks"], reference[name]["masks"], strict=True):
            first, second = mask_util.decode(mine).astype(bool), mask_util.decode(theirs).astype(bool)
            union = np.count_nonzero(first | second)
            same.append(np.array_equal(first, second))
            ious.append(np.count_nonzero(first & second) / union if union else 1.0)
    return 100.0 * float(np.mean(same)), float(np.mean(ious))


def compare(boxes: dict[str, list], reference: dict[str, list]) -> tuple[float, float]:
    """(% of images whose box equals the reference's, mean IoU with the reference's box); for
    rows of masks (the CutLER preset) the same over masks (:func:`compare_masks`)."""
    names = sorted(reference)
    if isinstance(reference[names[0]], dict):
        return compare_masks(boxes, reference)
    same = sum(boxes[name] == reference[name] for name in names)
    ious = [box_iou(np.asarray(boxes[name], float), np.asarray([reference[name]], float))[0] for name in names]
    return 100.0 * same / len(names), float(np.mean(ious))


def print_table(rows: list[dict], images: int) -> None:
    baseline = rows[0]
    by_name = {row["name"]: row for row in rows}
    header = ["config", "images/s", "speed-up vs baseline", "peak RSS", "identical boxes vs reference (%)",
              "mean IoU vs reference", "reference"]
    lines = []
    for row in rows:
        rate = images / row["seconds"]
        reference = row.get("reference", baseline["name"])
        identical, iou = compare(row["boxes"], by_name[reference]["boxes"])
        lines.append(
            [
                row["name"],
                f"{rate:.2f}" if rate >= 1 else f"{rate:.3g}",
                f"{rate / (images / baseline['seconds']):.2f}x",
                f"{row['peak_rss'] / 2**20:.0f} MiB",
                f"{identical:.1f}",
                f"{iou:.4f}",
                reference,
            ]
        )
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for line in lines:
        print("| " + " | ".join(line) + " |")


def print_solver_shares(rows: list[dict]) -> None:
    """How the CutLER preset rows solved their cuts (``CutlerCuts.solvers``), and their speed-up
    over the published-style loop."""
    reference = next((row for row in rows if row["name"] == "cutler published-style loop"), None)
    for row in rows:
        if row["name"].startswith("cutler preset") and reference:
            print(f"{row['name']}: {reference['seconds'] / row['seconds']:.1f}x the published-style loop's images/s")
            solvers = [solver for found in row["boxes"].values() for solver in found["solvers"]]
            shares = ", ".join(f"{name} {100 * solvers.count(name) / len(solvers):.0f}%" for name in ("lanczos", "dense", "repeat"))
            print(f"{row['name']}: cuts by {shares}")


def engine_configs(args: argparse.Namespace, method: str) -> list[tuple[str, list[str]]]:
    """The engine rows of one method: fp32 at batch 1 and at --batch_size, then bf16 (and fp16
    on CUDA) at --batch_size. The CutLER preset: fp32 at --batch_size with --crf_workers CRF
    processes, and with the CRF in the main process."""
    if method == "cutler":
        return [
            (f"cutler preset batch {args.batch_size} workers {args.num_workers} crf processes {crf}",
             ["--worker", "engine", "--method", "cutler", "--batch_size", str(args.batch_size), "--crf_workers", str(crf)])
            for crf in sorted({args.crf_workers, 0}, reverse=True)
        ]
    precisions = ["fp32", "bf16"] + (["fp16"] if args.device.startswith("cuda") else [])
    rows = []
    for precision in precisions:
        for batch in sorted({1, args.batch_size}) if precision == "fp32" else [args.batch_size]:
            name = f"{method} engine {precision} batch {batch} workers {args.num_workers}"
            rows.append((name, ["--worker", "engine", "--method", method, "--precision", precision, "--batch_size", str(batch)]))
    return rows


def method_rows(args: argparse.Namespace) -> list[tuple[str, list[str], str]]:
    """(name, worker flags, reference row name) of every row: the LOST baseline first, then each
    method's reference loop (where it has one) and engine rows."""
    baseline = "baseline (published-style loop)"
    rows = [(baseline, ["--worker", "baseline"], baseline)]
    for method in args.methods.split(","):
        if method.startswith("saliency-"):
            rows += saliency_rows(args, method, rows)
            continue
        engine_rows = engine_configs(args, method)
        reference = baseline if method == "lost" else engine_rows[0][0]
        if method in REFERENCE_LOOPS:
            reference = f"{method} published-style loop"
            rows.append((reference, ["--worker", "reference", "--method", method], reference))
        rows += [(name, extra, reference) for name, extra in engine_rows]
    return rows


def saliency_rows(
    args: argparse.Namespace, entry: str, rows: list[tuple[str, list[str], str]]
) -> list[tuple[str, list[str], str]]:
    """The row of a ``saliency-<method>[-bs]`` entry, after the method's fp32 engine row at
    --batch_size (its reference) when that row is not in the table yet."""
    method = entry.removeprefix("saliency-").removesuffix("-bs")
    reference = f"{method} engine fp32 batch {args.batch_size} workers {args.num_workers}"
    added = [] if any(name == reference for name, _, _ in rows) else [
        (reference, ["--worker", "engine", "--method", method, "--precision", "fp32", "--batch_size", str(args.batch_size)], reference)
    ]
    name = f"{entry} fp32 batch {args.batch_size} workers {args.num_workers}"
    return [*added, (name, ["--worker", "saliency", "--method", entry, "--batch_size", str(args.batch_size)], reference)]


def memory_check(common: list[str], scratch: Path, args: argparse.Namespace) -> None:
    """Peak RSS of the engine over 200 and over 2,000 small images, to show it stays flat."""
    rows = []
    for count in (200, 2000):
        folder = scratch / f"memory{count}"
        make_images(folder, count, [(200, 150), (150, 200)], seed=count)
        run_common = [*common[:-2], "--folder", str(folder)]
        rows.append(run_config(run_common, f"engine fp32 {count} images", ["--worker", "engine", "--precision", "fp32"], scratch))
    small, large = rows
    print("| run | images/s | peak RSS |")
    print("|---|---|---|")
    for count, row in zip((200, 2000), rows, strict=True):
        print(f"| {row['name']} | {count / row['seconds']:.1f} | {row['peak_rss'] / 2**20:.0f} MiB |")
    print(f"peak RSS ratio 2000/200: {large['peak_rss'] / small['peak_rss']:.3f}")


def profile(args: argparse.Namespace) -> None:
    """Share of CPU time per operator for the engine in bf16 on a few images."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    model = get_model(args.arch, args.patch_size, device=args.device, pretrained_weights=str(args.checkpoint))
    extractor = FeatureExtractor(model, args.arch, args.patch_size)
    records = single_image_records(args.folder)[:8]
    config = DiscoveryConfig(batch_size=args.batch_size, num_workers=0, precision="bf16")
    list(discover(extractor, records[:1], config, args.device))
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        list(discover(extractor, records, config, args.device))
    events = prof.key_averages()
    total = sum(event.self_cpu_time_total for event in events)
    matrix_ops = ("addmm", "aten::mm", "aten::bmm", "linear", "scaled_dot_product", "convolution", "mkldnn")
    matrix = sum(event.self_cpu_time_total for event in events if any(op in event.key for op in matrix_ops))
    softmax = sum(event.self_cpu_time_total for event in events if "softmax" in event.key)
    print(f"matrix products (addmm/mm/bmm/fused attention/conv): {100 * matrix / total:.1f}% of CPU time")
    print(f"attention softmax outside the fused kernel: {100 * softmax / total:.1f}% of CPU time")
    print(events.table(sort_by="self_cpu_time_total", row_limit=12))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each configuration (the median counts)")
    parser.add_argument("--arch", default="vit_small", choices=["vit_tiny", "vit_small", "vit_base"])
    parser.add_argument("--patch_size", type=int, default=16, choices=[8, 16])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch_size", type=int, default=4, help="batch size of the batched engine rows")
    parser.add_argument("--num_workers", type=int, default=1)
    parser.add_argument("--qk_gain", type=float, default=1.0, help="sharpen the random attention (see random_state_dict)")
    parser.add_argument("--memory_check", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--methods", default="lost", help="comma-separated methods of the method table, one row block each; cutler: the CutLER preset; saliency-<method>[-bs]: a saliency evaluation run")
    parser.add_argument("--crf_workers", type=int, default=1, help="CRF worker processes of the CutLER preset rows")
    parser.add_argument("--worker", choices=["baseline", "reference", "engine", "saliency"], help=argparse.SUPPRESS)
    parser.add_argument("--method", default="lost", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(args)
        return
    with tempfile.TemporaryDirectory(prefix="bench_lost_") as scratch_name:
        scratch = Path(scratch_name)
        args.folder, args.checkpoint = scratch / "images", scratch / "random_weights.pth"
        torch.manual_seed(0)
        torch.save(random_state_dict(args.arch, args.patch_size, args.qk_gain), args.checkpoint)
        make_images(args.folder, args.images, VOC_SIZES)
        make_masks(args.folder, scratch / "masks")
        save_found_head(new_found_head(build_model(args.arch, args.patch_size).embed_dim), scratch / "found_head.pt")
        if args.profile:
            profile(args)
            return
        common = [
            "--arch", args.arch, "--patch_size", str(args.patch_size), "--device", args.device,
            "--num_workers", str(args.num_workers), "--checkpoint", str(args.checkpoint), "--folder", str(args.folder),
        ]
        if args.memory_check:
            memory_check(common, scratch, args)
            return
        print(f"{args.arch}/{args.patch_size}, qk gain {args.qk_gain:g}, {args.images} VOC-like images, device {args.device}, "
              f"{os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads")
        rows = method_rows(args)
        results = run_interleaved(common, [(name, extra) for name, extra, _ in rows], scratch, args.repeats)
        for result, (_, _, reference) in zip(results, rows, strict=True):
            result["reference"] = reference
        print_table(results, args.images)
        print_solver_shares(results)


if __name__ == "__main__":
    main()
