"""Agreement and speed of TokenCut's two eigensolvers on synthetic feature maps.

    python -m bench.tokencut_agreement                     # about 8 minutes on two CPU cores
    python -m bench.tokencut_agreement --small 40 --medium 10 --large 2   # a quick look
    python -m bench.tokencut_agreement --device cuda       # "auto" on the GPU, "dense" on the CPU
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python -m bench.tokencut_agreement   # steadier on a busy machine

It draws d = 384 feature maps of two kinds over grids of three size classes (small: 100-600
patches; ViT-S/16 on VOC: 750-1,100; ViT-S/8 on VOC: 2,900-4,300) and runs
``tokencut(eigensolver="auto")`` and ``tokencut(eigensolver="dense")`` on each:

* "vit-like": a few random prototypes mixed over smooth random segments, a shared component
  (ViT keys share a large mean) and patch noise, so that the graph's edge density varies;
* "planted": the same kind of background with a rectangle of its own prototype (the object);
* "noise": independent patch features around a shared component, no spatial structure at all:
  a random graph whose eigenvalues crowd together, the hardest case for an iterative solver.

It prints, per kind and size class and overall: maps, share with the same box, the same partition
and the same seed, the largest ``|Δv|`` after sign alignment (overall and where the boxes
differ), how often "auto" fell back to the dense solver, and the median time per map of each
solver (the whole ``tokencut`` call, affinity included), wall-clock and CPU time of the process
(the latter is less disturbed by other processes on the machine). ``--weighted`` adds a run of the
weighted-graph ablation (``binary_graph=False``) on the small and medium maps.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from lost.methods.tokencut import tokencut
from tests.synthetic_maps import KINDS

SIZE_CLASSES = {
    "small": [(10, 12), (12, 16), (16, 20), (20, 24), (18, 30), (24, 25)],
    "ViT-S/16": [(24, 32), (32, 24), (32, 32), (24, 38), (28, 32)],
    "ViT-S/8": [(47, 63), (63, 47), (63, 63), (63, 68)],
}
"""Grids (rows, cols) per size class; ViT-S/8 on 375x500, 500x375, 500x500 and 500x540 images."""


@dataclass(frozen=True)
class Comparison:
    """One map's outcome: which solver agreed on what, and how long each took."""

    kind: str
    size_class: str
    same_box: bool
    same_partition: bool
    same_seed: bool
    max_difference: float
    auto_solver: str
    auto_seconds: float
    dense_seconds: float
    auto_cpu_seconds: float
    dense_cpu_seconds: float


def timed(feats: torch.Tensor, grid: tuple[int, int], binary_graph: bool, eigensolver: str) -> tuple:
    """``(result, wall seconds, CPU seconds of this process)`` of one ``tokencut`` call, patch size 8."""
    start, start_cpu = time.perf_counter(), time.process_time()
    result = tokencut(feats, grid, (8, 8), (grid[0] * 8, grid[1] * 8), binary_graph=binary_graph, eigensolver=eigensolver)
    if feats.device.type == "cuda":
        torch.cuda.synchronize()
    return result, time.perf_counter() - start, time.process_time() - start_cpu


def compare(
    kind: str, size_class: str, feats: torch.Tensor, grid: tuple[int, int], device: str, binary_graph: bool
) -> Comparison:
    """Run both solvers on one map ("dense" always on the CPU) and compare their answers."""
    auto, auto_seconds, auto_cpu_seconds = timed(feats.to(device), grid, binary_graph, "auto")
    dense, dense_seconds, dense_cpu_seconds = timed(feats, grid, binary_graph, "dense")
    sign = 1.0 if float(np.dot(auto.eigenvector, dense.eigenvector)) >= 0 else -1.0
    return Comparison(
        kind=kind,
        size_class=size_class,
        same_box=auto.box.tolist() == dense.box.tolist(),
        same_partition=bool(np.array_equal(auto.partition, dense.partition)),
        same_seed=auto.seed == dense.seed,
        max_difference=float(np.abs(sign * auto.eigenvector - dense.eigenvector).max()),
        auto_solver=auto.solver,
        auto_seconds=auto_seconds,
        dense_seconds=dense_seconds,
        auto_cpu_seconds=auto_cpu_seconds,
        dense_cpu_seconds=dense_cpu_seconds,
    )


def run(counts: dict[str, int], device: str, binary_graph: bool, seed: int) -> list[Comparison]:
    """``counts[size_class]`` maps of each kind per size class, compared one by one."""
    rng = np.random.default_rng(seed)
    comparisons = []
    for size_class, count in counts.items():
        for index in range(count):
            for kind, make in KINDS.items():
                grid = SIZE_CLASSES[size_class][index % len(SIZE_CLASSES[size_class])]
                comparisons.append(compare(kind, size_class, make(grid, rng), grid, device, binary_graph))
            print(f"  {size_class}: {index + 1}/{count}", file=sys.stderr, end="\r")
    return comparisons


def summary_row(label: str, rows: list[Comparison]) -> str:
    """One table row over ``rows``."""
    differing = [row.max_difference for row in rows if not row.same_box]
    auto_seconds = np.median([row.auto_seconds for row in rows])
    dense_seconds = np.median([row.dense_seconds for row in rows])
    auto_cpu_seconds = np.median([row.auto_cpu_seconds for row in rows])
    dense_cpu_seconds = np.median([row.dense_cpu_seconds for row in rows])
    cells = [
        label,
        str(len(rows)),
        f"{100 * np.mean([row.same_box for row in rows]):.1f}",
        f"{100 * np.mean([row.same_partition for row in rows]):.1f}",
        f"{100 * np.mean([row.same_seed for row in rows]):.1f}",
        f"{max(row.max_difference for row in rows):.1e}",
        f"{max(differing):.1e}" if differing else "-",
        str(sum(row.auto_solver == "dense" for row in rows)),
        f"{1000 * auto_seconds:.0f}",
        f"{1000 * dense_seconds:.0f}",
        f"{dense_seconds / auto_seconds:.0f}x",
        f"{1000 * auto_cpu_seconds:.0f}",
        f"{1000 * dense_cpu_seconds:.0f}",
        f"{dense_cpu_seconds / auto_cpu_seconds:.0f}x",
    ]
    return "| " + " | ".join(cells) + " |"


def print_table(title: str, comparisons: list[Comparison]) -> None:
    """Markdown table per (size class, kind), per size class and overall."""
    print(f"\n{title}")
    print("| maps | n | same box % | same partition % | same seed % | max abs dv | max abs dv, boxes differ "
          "| auto fell back | auto ms | dense ms | speed-up | auto CPU ms | dense CPU ms | CPU speed-up |")
    print("|" + "---|" * 14)
    for size_class in dict.fromkeys(row.size_class for row in comparisons):
        for kind in KINDS:
            rows = [row for row in comparisons if row.size_class == size_class and row.kind == kind]
            print(summary_row(f"{size_class} {kind}", rows))
    print(summary_row("all", comparisons))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=150, help="maps of each kind with 100-600 patches")
    parser.add_argument("--medium", type=int, default=50, help="maps of each kind with 750-1,100 patches")
    parser.add_argument("--large", type=int, default=6, help="maps of each kind with 2,900-4,300 patches")
    parser.add_argument("--weighted", type=int, default=0, help="small and medium maps of each kind, weighted graph")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    blas_threads = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    print(f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} torch threads, "
          f"BLAS threads {blas_threads}")
    counts = {"small": args.small, "ViT-S/16": args.medium, "ViT-S/8": args.large}
    print_table("binary graph (default)", run(counts, args.device, binary_graph=True, seed=args.seed))
    if args.weighted:
        weighted = {"small": args.weighted, "ViT-S/16": max(1, args.weighted // 4)}
        print_table("weighted graph (--no_binary_graph)", run(weighted, args.device, binary_graph=False, seed=args.seed + 1))


if __name__ == "__main__":
    main()
