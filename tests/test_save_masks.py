"""main_lost.py --save_masks end to end: image trees, instances.json read back, resume, torchrun shards and nodes."""

import contextlib
import io
import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_noise_images
from PIL import Image
from pycocotools.coco import COCO
from run_names import input_folder, weights_tag

import main_lost
from lost.io.safe_files import read_prediction_boxes

ROOT = Path(__file__).resolve().parents[1]
TREE_SIZES = {"n02/b": [(64, 48), (33, 17)], "n01": [(48, 64), (50, 40)], "n02/a": [(17, 33)]}


@pytest.fixture(scope="module")
def image_tree(tmp_path_factory) -> Path:
    """ImageNet's layout: train/<class>/<image>, one class nested deeper, and a top-level image."""
    root = tmp_path_factory.mktemp("tree") / "train"
    for seed, (folder, sizes) in enumerate(TREE_SIZES.items()):
        write_noise_images(root / folder, sizes, seed=seed)
    write_noise_images(root, [(40, 30)], seed=9)
    (root / "n01" / "notes.txt").write_text("not an image")
    return root


def command(tree: Path, output: Path, checkpoint: Path, *extra: str) -> list[str]:
    return [
        "--image_path",
        str(tree),
        "--arch",
        "vit_tiny",
        "--pretrained_weights",
        str(checkpoint),
        "--output_dir",
        str(output),
        "--device",
        "cpu",
        "--num_workers",
        "0",
        "--method",
        "maskcut",
        "--max_size",
        "40",
        "--save_masks",
        *extra,
    ]


def run_folder(output: Path, tree: Path, checkpoint: Path) -> Path:
    return output / input_folder(tree) / f"MaskCut-vit_tiny16_k{weights_tag(checkpoint)}_max_size-40"


def quiet_coco(path: Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


@pytest.fixture(scope="module")
def one_process(image_tree, vit_tiny_checkpoint, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("one")
    assert main_lost.main(command(image_tree, output, vit_tiny_checkpoint)) == 0
    return run_folder(output, image_tree, vit_tiny_checkpoint) / "instances.json"


def test_a_tree_is_read_recursively_in_path_order_with_names_relative_to_its_root(one_process):
    images = json.loads(one_process.read_text())["images"]
    assert [image["file_name"] for image in images] == [
        "000000.jpg",
        "n01/000000.jpg",
        "n01/000001.jpg",
        "n02/a/000000.jpg",
        "n02/b/000000.jpg",
        "n02/b/000001.jpg",
    ]
    assert [image["id"] for image in images] == [1, 2, 3, 4, 5, 6]


def test_instances_have_true_sizes_and_masks_whose_boxes_are_the_predicted_boxes(one_process, image_tree):
    coco = quiet_coco(one_process)
    boxes = read_prediction_boxes(one_process.parent / "preds.pkl")
    for image in coco.dataset["images"]:
        width, height = Image.open(image_tree / image["file_name"]).size
        assert (image["width"], image["height"]) == (width, height)
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
        predicted = np.asarray(boxes[image["file_name"]]).reshape(-1, 4)
        assert len(annotations) == len(predicted)
        for annotation, box in zip(annotations, predicted, strict=True):
            mask = coco.annToMask(annotation).astype(bool)
            rows, cols = np.nonzero(mask)
            assert [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1] == box.tolist()
            x, y, w, h = annotation["bbox"]
            assert [x, y, x + w, y + h] == box.tolist()


def test_a_run_resumes_its_masks_after_a_kill_and_adds_them_to_a_run_without_masks(
    one_process, image_tree, vit_tiny_checkpoint, tmp_path
):
    assert main_lost.main(command(image_tree, tmp_path, vit_tiny_checkpoint)[:-1]) == 0, "first without --save_masks"
    folder = run_folder(tmp_path, image_tree, vit_tiny_checkpoint)
    assert not (folder / "instances.json").exists()
    assert main_lost.main(command(image_tree, tmp_path, vit_tiny_checkpoint)) == 0
    assert (folder / "instances.json").read_bytes() == one_process.read_bytes()

    lines = (folder / "masks.jsonl").read_bytes().splitlines(keepends=True)
    (folder / "masks.jsonl").write_bytes(b"".join(lines[:3]) + lines[3][:20])  # killed while writing image 3
    (folder / "instances.json").unlink()
    assert main_lost.main(command(image_tree, tmp_path, vit_tiny_checkpoint)) == 0
    assert (folder / "instances.json").read_bytes() == one_process.read_bytes()
    assert len((folder / "masks.jsonl").read_bytes().splitlines()) == 1 + 6, "only the 4 lost images were redone"


def test_a_mask_file_of_another_run_is_one_line(image_tree, vit_tiny_checkpoint, tmp_path, capsys):
    folder = run_folder(tmp_path, image_tree, vit_tiny_checkpoint)
    folder.mkdir(parents=True)
    (folder / "masks.jsonl").write_text(json.dumps({"run": {"method": "lost"}}) + "\n")
    assert main_lost.main(command(image_tree, tmp_path, vit_tiny_checkpoint)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"error: {folder / 'masks.jsonl'}: a mask file from another run" in err


def test_visualize_masks_draws_one_picture_per_image_of_a_tree_in_its_folder(image_tree, vit_tiny_checkpoint, tmp_path):
    arguments = command(image_tree, tmp_path, vit_tiny_checkpoint, "--visualize", "masks")
    arguments[arguments.index("maskcut")] = "tokencut"
    assert main_lost.main(arguments) == 0
    exp = f"TokenCut-vit_tiny16_k{weights_tag(vit_tiny_checkpoint)}_max_size-40"
    folder = tmp_path / input_folder(image_tree) / "visualizations" / exp
    pictures = sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*.png"))
    assert pictures == [
        "000000_masks.png",
        "n01/000000_masks.png",
        "n01/000001_masks.png",
        "n02/a/000000_masks.png",
        "n02/b/000000_masks.png",
        "n02/b/000001_masks.png",
    ], "images of the tree keep their folders"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def script_command(tree: Path, output: Path, checkpoint: Path) -> list[str]:
    return [str(ROOT / "main_lost.py"), *command(tree, output, checkpoint)]


def test_torchrun_shards_give_the_one_process_file(one_process, image_tree, vit_tiny_checkpoint, tmp_path):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    subprocess.run(
        [*launcher, *script_command(image_tree, tmp_path, vit_tiny_checkpoint)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert (run_folder(tmp_path, image_tree, vit_tiny_checkpoint) / "instances.json").read_bytes() == one_process.read_bytes()


def test_two_nodes_of_a_multi_node_rendezvous_give_the_one_process_file(
    one_process, image_tree, vit_tiny_checkpoint, tmp_path
):
    endpoint = f"localhost:{free_port()}"
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "2",
        "--nproc_per_node",
        "1",
        "--rdzv_backend",
        "c10d",
        "--rdzv_endpoint",
        endpoint,
        "--rdzv_id",
        "lost-masks",
    ]
    nodes = [
        subprocess.Popen(
            [*launcher, *script_command(image_tree, tmp_path, vit_tiny_checkpoint)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(2)
    ]
    outputs = [node.communicate(timeout=300)[0].decode() for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs
    folder = run_folder(tmp_path, image_tree, vit_tiny_checkpoint)
    assert (folder / "instances.json").read_bytes() == one_process.read_bytes()
    assert sorted(path.name for path in folder.glob("masks.*")) == ["masks.rank0-of-2.jsonl", "masks.rank1-of-2.jsonl"]
