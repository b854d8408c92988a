"""Cluster LOST boxes into pseudo-classes for class-aware detector training (OD).

    python cluster_for_OD.py --pred_file data/LOST_predictions/LOST_VOC07.pkl --nb_clusters 20 \
        --dataset VOC07 --set trainval

Each image of the data set that has a predicted box is cropped to it, embedded with the CLS token
of a ViT (DINO's ViT-S/16 by default, or a timm name: crops are cut to its own patch size), and
the whitened embeddings are clustered with k-means.
Writes ``<pred_file stem>_clustered_<K>clu.pkl`` (image name -> ``{"pseudo_label": int,
"predicted_bb": box}``) beside the predictions, and caches the crop features there
(``<pred_file stem>_cropped_feats_<arch><patch>.npz``) so that other K or seeds cluster at once.
Predictions of a multi-object method (``--method maskcut``) have several boxes per image: each
box is cropped and clustered, and the file maps an image to ``{"pseudo_label": (K,) ints,
"predicted_bb": (K, 4)}``, best box first.
With ``--instances`` (the ``instances.json`` that ``main_lost.py --save_masks`` wrote beside the
predictions), it also writes ``<instances stem>_clustered_<K>clu.json``: the same masks, each in
its box's pseudo-class (categories ``cluster_0`` ... as ids 1 ... K).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from lost import backbones, clustering
from lost.cli import backbone_spec
from lost.data import datasets
from lost.errors import LostError, run_cli
from lost.io import instances, safe_files


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Cluster LOST boxes into pseudo-classes.")
    parser.add_argument("--pred_file", type=Path, required=True, help="LOST predictions (preds.pkl / .json)")
    parser.add_argument("--dataset", default="VOC07", choices=datasets.DATASETS, help="data set of the predictions")
    parser.add_argument("--set", default="trainval", choices=["val", "train", "trainval", "test"], help="image set")
    parser.add_argument(
        "--no_hard", action="store_true", help="VOC: only images with a non-truncated, non-difficult object"
    )
    parser.add_argument(
        "--datasets_root", type=Path, default=Path("datasets"), help="folder holding VOC2007/, COCO/, ..."
    )
    parser.add_argument(
        "--instances", type=Path, default=None, help="instances.json of the same run: also write it with the pseudo-classes"
    )
    parser.add_argument("--nb_clusters", type=int, default=20, help="number of k-means clusters")
    parser.add_argument("--random_seed", type=int, default=123, help="k-means seed")
    parser.add_argument(
        "--whitening", default="std", choices=clustering.WHITENINGS, help="std: per-dimension (the paper); pca"
    )
    parser.add_argument("--arch", default="vit_small", type=backbones.vit_arch, help="ViT giving the CLS embeddings (a timm ViT name too)")
    parser.add_argument("--patch_size", type=int, default=None, choices=[8, 16], help="patch size of DINO's ViTs (default: 16; a timm name has its own)")
    parser.add_argument("--pretrained_weights", type=Path, default=None, help="local checkpoint instead of DINO's")
    parser.add_argument("--checkpoint_key", default="teacher", help="entry of a DINO training checkpoint")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    parser.add_argument("--batch_size", type=int, default=32, help="crops per forward pass")
    parser.add_argument("--num_workers", type=int, default=4, help="image decoding processes")
    return parser.parse_args(argv)


def boxes_to_cluster(
    pred_file: Path, dataset: str, image_set: str, datasets_root: Path, no_hard: bool
) -> tuple[list[str], list[Path], np.ndarray, bool]:
    """Every predicted box of the data set's images, one row per box (an image's rows adjacent,
    best first): names, image paths, boxes (n, 4), and whether the file holds several boxes per
    image (a multi-object method's)."""
    predictions = safe_files.read_prediction_boxes(pred_file)
    spec = datasets.load_dataset(dataset, image_set, datasets_root, no_hard)
    records = [record for record in spec.records if record.name in predictions]
    if not records:
        raise LostError(
            f"{pred_file}: no prediction for any of the {len(spec.records)} images of {spec.name}; "
            "check --dataset and --set"
        )
    per_image = [np.asarray(predictions[record.name]).reshape(-1, 4) for record in records]
    names = [record.name for record, boxes in zip(records, per_image, strict=True) for _ in boxes]
    paths = [record.path for record, boxes in zip(records, per_image, strict=True) for _ in boxes]
    multi_box = any(np.ndim(predictions[record.name]) == 2 for record in records)
    return names, paths, np.concatenate(per_image), multi_box


def cluster(args: argparse.Namespace) -> None:
    """Crop features (from the cache beside the predictions when it holds these boxes and this
    model's), k-means, the pseudo-labels file."""
    backbone = backbone_spec(args)
    names, paths, boxes, multi_box = boxes_to_cluster(
        args.pred_file, args.dataset, args.set, args.datasets_root, args.no_hard
    )
    masks = None if args.instances is None else instances.read_instances(args.instances)
    if masks is not None:  # a mask file of another run fails before the crops are embedded
        instances.relabelled_instances(masks, boxes_by_file(paths, boxes, np.zeros(len(boxes), dtype=np.int64)), 1)
    model_id = backbone.model_id()
    patch_size = backbone.entry.patch_sizes[0] if backbone.entry.from_timm else backbone.patch_size
    cache = clustering.features_cache_file(args.pred_file, args.arch, patch_size)
    feats = clustering.load_features(cache, names, boxes, model_id)
    if feats is None:
        extractor = backbones.FeatureExtractor.for_spec(backbones.load_backbone(backbone, args.device), backbone)
        feats = clustering.crop_features(extractor, paths, boxes, args.device, args.batch_size, args.num_workers)
        clustering.save_features(cache, names, boxes, feats, model_id)
        print(f"crop features of {len(names)} boxes saved at {cache}")
    else:
        print(f"crop features of {len(names)} boxes loaded from {cache}")
    labels = clustering.cluster_features(feats, args.nb_clusters, args.random_seed, args.whitening)
    out_file = clustering.clustered_file(args.pred_file, args.nb_clusters, args.random_seed)
    clustering.write_pseudo_labels(out_file, names, labels, boxes, grouped=multi_box)
    sizes = np.bincount(labels, minlength=args.nb_clusters)
    print(f"cluster sizes: {' '.join(str(size) for size in sizes)}")
    print(f"pseudo-labels saved at {out_file}")
    if masks is not None:
        write_clustered_instances(masks, paths, boxes, labels, args)


def boxes_by_file(paths: list[Path], boxes: np.ndarray, labels: np.ndarray) -> dict[str, list[tuple[np.ndarray, int]]]:
    """file name -> (box, label) of each clustered box of that image (a data set's instance file
    names its images by file name)."""
    by_file: dict[str, list[tuple[np.ndarray, int]]] = {}
    for path, box, label in zip(paths, boxes, labels, strict=True):
        by_file.setdefault(Path(path).name, []).append((box, int(label)))
    return by_file


def write_clustered_instances(
    masks: instances.InstanceFile, paths: list[Path], boxes: np.ndarray, labels: np.ndarray, args: argparse.Namespace
) -> None:
    """``<instances stem>_clustered_<K>clu.json``: the masks in their boxes' pseudo-classes."""
    content = instances.relabelled_instances(masks, boxes_by_file(paths, boxes, labels), args.nb_clusters)
    out_file = clustering.clustered_file(args.instances, args.nb_clusters, args.random_seed).with_suffix(".json")
    safe_files.write_json(out_file, content)
    print(f"clustered masks saved at {out_file}")


def main(argv: list[str] | None = None) -> int:
    return run_cli(lambda: cluster(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
