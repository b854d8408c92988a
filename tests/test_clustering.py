"""Crops, CLS features, whitening and k-means of LOST boxes; cluster_for_OD.py end to end."""

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DEVICE_FLAGS, TEST_DEVICE, tiny_vit
from PIL import Image
from tiny_datasets import make_voc_tree

import cluster_for_OD
from lost import clustering
from lost.backbones import FeatureExtractor, loading
from lost.data import images
from lost.errors import LostError
from lost.io import safe_files


def two_colour_image(path: Path) -> Path:
    """A 100 x 60 (W x H) image: red left of x = 50, blue from x = 50."""
    image = Image.new("RGB", (100, 60), (255, 0, 0))
    image.paste((0, 0, 255), (50, 0, 100, 60))
    image.save(path)
    return path


# ----------------------------------------------------------------------------------------------
# Crops


def test_shorter_side_becomes_256_and_longer_side_scales_like_torchvision():
    assert clustering.resized_crop_size(100, 200) == (256, 512)
    assert clustering.resized_crop_size(200, 100) == (512, 256)
    assert clustering.resized_crop_size(300, 301) == (256, 256)  # int(256 * 301 / 300) = 256
    assert clustering.resized_crop_size(30, 31) == (256, 264)  # int(264.53)


def test_very_elongated_crops_are_capped():
    # 10 x 1000 would be 256 x 25600: the long side is capped at 4096, the short one scaled alike
    assert clustering.resized_crop_size(10, 1000) == (40, 4096)


def test_boxes_are_clipped_to_the_image_and_kept_non_empty():
    assert clustering.clip_box(np.array([-5, -3, 120, 70]), 100, 60) == (0, 0, 100, 60)
    assert clustering.clip_box(np.array([99, 59, 99, 59]), 100, 60) == (99, 59, 100, 60)
    assert clustering.clip_box(np.array([10.4, 20.6, 30.5, 40.5]), 100, 60) == (10, 21, 30, 40)


def test_crop_covers_the_box_only(tmp_path):
    image = images.load_rgb(two_colour_image(tmp_path / "im.png"))
    crop = clustering.crop_tensor(image, np.array([50, 10, 90, 30]), 16)  # 40 x 20 of blue
    assert crop.shape == (3, 256, 512)
    blue = images.image_to_tensor(Image.new("RGB", (1, 1), (0, 0, 255)))[:, 0, 0]
    assert torch.allclose(crop, blue[:, None, None].expand_as(crop), atol=1e-5)


def test_crop_is_cut_to_whole_patches(tmp_path):
    image = images.load_rgb(two_colour_image(tmp_path / "im.png"))
    # 30 x 31 box -> 256 x 264 resized -> 256 x 256 for p = 16, 256 x 264 for p = 8
    assert clustering.crop_tensor(image, np.array([0, 0, 31, 30]), 16).shape == (3, 256, 256)
    assert clustering.crop_tensor(image, np.array([0, 0, 31, 30]), 8).shape == (3, 256, 264)
    assert clustering.crop_grid(np.array([0, 0, 31, 30]), (100, 60), 16) == (16, 16)


def test_cutting_to_whole_patches_leaves_the_cls_embedding_unchanged(tmp_path):
    model = tiny_vit(patch_size=16)
    image = images.load_rgb(two_colour_image(tmp_path / "im.png"))
    box = np.array([5, 5, 36, 35])  # 31 x 30 -> resized 264 x 256, cut to 256 x 256
    x1, y1, x2, y2 = box
    full = images.image_to_tensor(image.crop((x1, y1, x2, y2)).resize((264, 256), Image.BICUBIC))
    with torch.no_grad():
        expected = model(full[None])
        cut = model(clustering.crop_tensor(image, box, 16)[None])
    assert torch.allclose(cut, expected, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Features


@pytest.fixture
def crops_on_disk(tmp_path):
    paths = [two_colour_image(tmp_path / f"im{i}.png") for i in range(5)]
    boxes = [
        np.array([0, 0, 50, 60]),
        np.array([50, 0, 100, 60]),
        np.array([10, 10, 40, 20]),
        np.array([0, 0, 50, 60]),
        np.array([60, 5, 70, 55]),
    ]
    return paths, boxes


def test_batched_features_equal_one_by_one_features(crops_on_disk):
    paths, boxes = crops_on_disk
    model = tiny_vit(patch_size=16)
    extractor = FeatureExtractor(model, "vit_tiny", 16)
    batched = clustering.crop_features(extractor, paths, boxes, batch_size=8)
    single = clustering.crop_features(extractor, paths, boxes, batch_size=1)
    assert batched.shape == (5, 48)
    np.testing.assert_allclose(batched, single, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(batched[0], batched[3], atol=1e-6)  # same crop, same row
    with torch.no_grad():
        image = images.load_rgb(paths[2])
        direct = torch.nn.functional.normalize(model(clustering.crop_tensor(image, boxes[2], 16)[None]), dim=1)
    np.testing.assert_allclose(batched[2], direct[0].numpy(), atol=1e-5)


def test_unreadable_images_are_reported(crops_on_disk, tmp_path):
    paths, boxes = crops_on_disk
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    with pytest.raises(LostError, match=r"1 image\(s\) cannot be read: .*broken\.jpg"):
        clustering.crop_features(FeatureExtractor(tiny_vit(patch_size=16), "vit_tiny", 16), [*paths, broken], [*boxes, boxes[0]])


# ----------------------------------------------------------------------------------------------
# Whitening and k-means


def test_std_whitening_divides_each_dimension_by_its_std():
    feats = np.array([[1.0, 0.0, 5.0], [3.0, 0.0, 5.0], [1.0, 4.0, 5.0], [3.0, 4.0, 5.0]])
    # std over rows: 1, 2, 0 (a constant dimension is left as it is)
    np.testing.assert_allclose(clustering.whiten(feats, "std"), feats / np.array([1.0, 2.0, 1.0]))


def test_pca_whitening_decorrelates_to_unit_variance():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(200, 3)) @ np.array([[2.0, 1.0, 0.0], [0.0, 1.0, 0.5], [0.0, 0.0, 0.1]])
    white = clustering.whiten(feats, "pca")
    np.testing.assert_allclose(np.cov(white, rowvar=False, bias=True), np.eye(3), atol=1e-8)


def test_pca_whitening_drops_null_directions():
    feats = np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])  # rank 1 once centered
    assert clustering.whiten(feats, "pca").shape == (3, 1)


def test_unknown_whitening_is_a_user_error():
    with pytest.raises(LostError, match="--whitening zca"):
        clustering.whiten(np.ones((2, 2)), "zca")


def planted_clusters(seed=0, per_cluster=30, dim=16, k=4):
    """`k` groups of unit vectors around distinct random directions; labels 0..k-1."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, dim))
    feats = np.concatenate([c + 0.05 * rng.normal(size=(per_cluster, dim)) for c in centers])
    return clustering.l2_normalize(feats), np.repeat(np.arange(k), per_cluster)


@pytest.mark.parametrize("whitening", clustering.WHITENINGS)
def test_kmeans_recovers_planted_clusters(whitening):
    feats, truth = planted_clusters()
    labels = clustering.cluster_features(feats, 4, seed=123, whitening=whitening)
    # each planted group gets one label of its own
    assert [len(set(labels[truth == k])) for k in range(4)] == [1, 1, 1, 1]
    assert len({labels[truth == k][0] for k in range(4)}) == 4


def test_same_seed_gives_same_clusters():
    feats = clustering.l2_normalize(np.random.default_rng(1).normal(size=(60, 8)))
    first = clustering.cluster_features(feats, 5, seed=123)
    assert np.array_equal(first, clustering.cluster_features(feats, 5, seed=123))
    assert sorted(set(first.tolist())) == [0, 1, 2, 3, 4]


def test_more_clusters_than_boxes_is_a_user_error():
    with pytest.raises(LostError, match="--nb_clusters 5"):
        clustering.kmeans(np.ones((3, 2)), 5, 0)


# ----------------------------------------------------------------------------------------------
# Files


def test_output_names_follow_the_prediction_file():
    pred = Path("data/LOST_predictions/LOST_VOC07.pkl")
    assert clustering.clustered_file(pred, 20, 123) == Path("data/LOST_predictions/LOST_VOC07_clustered_20clu.pkl")
    assert clustering.clustered_file(pred, 20, 7).name == "LOST_VOC07_clustered_20clu_seed-7.pkl"
    assert clustering.features_cache_file(pred, "vit_small", 16).name == "LOST_VOC07_cropped_feats_vit_small16.npz"


def test_pseudo_labels_round_trip_through_the_restricted_reader(tmp_path):
    path = tmp_path / "p_clustered_2clu.pkl"
    boxes = [np.array([1, 2, 3, 4]), np.array([5, 6, 7, 8])]
    clustering.write_pseudo_labels(path, ["a.jpg", "b.jpg"], np.array([1, 0]), boxes)
    labels = clustering.read_pseudo_labels(path)
    assert {name: [entry.label for entry in entries] for name, entries in labels.items()} == {"a.jpg": [1], "b.jpg": [0]}
    np.testing.assert_array_equal(labels["b.jpg"][0].box, [5, 6, 7, 8])


def test_pseudo_label_reader_refuses_foreign_objects(tmp_path):
    import pickle

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"a.jpg": {"pseudo_label": 0, "predicted_bb": Path("x")}}))
    with pytest.raises(LostError, match="refusing to load"):
        clustering.read_pseudo_labels(path)


def test_feature_cache_is_used_only_for_the_same_boxes_and_model(tmp_path):
    path = tmp_path / "cache.npz"
    names, boxes, feats = ["a", "b"], np.array([[0, 0, 4, 4], [1, 1, 5, 5]]), np.eye(2, dtype=np.float32)
    clustering.save_features(path, names, boxes, feats, "vit_small/16 w")
    np.testing.assert_array_equal(clustering.load_features(path, names, boxes, "vit_small/16 w"), feats)
    assert clustering.load_features(path, names, boxes + 1, "vit_small/16 w") is None
    assert clustering.load_features(path, ["a"], boxes[:1], "vit_small/16 w") is None
    assert clustering.load_features(path, names, boxes, "vit_base/16 w") is None
    assert clustering.load_features(tmp_path / "none.npz", names, boxes, "vit_small/16 w") is None


# ----------------------------------------------------------------------------------------------
# cluster_for_OD.py


@pytest.fixture
def voc_predictions(tmp_path):
    tree = make_voc_tree(tmp_path / "datasets")
    preds = {name: boxes[0] for name, boxes in tree.gt.items()}
    safe_files.write_predictions(tmp_path / "lost", preds)
    return tree, tmp_path / "lost" / "preds.pkl"


def test_cli_clusters_and_caches(voc_predictions, monkeypatch, capsys):
    tree, pred_file = voc_predictions
    monkeypatch.setattr(loading, "get_model", lambda *args, **kwargs: tiny_vit(patch_size=16).to(TEST_DEVICE))
    argv = ["--pred_file", str(pred_file), "--nb_clusters", "2", "--datasets_root", str(tree.datasets_root)]
    assert cluster_for_OD.main([*argv, "--num_workers", "0", *DEVICE_FLAGS]) == 0
    assert "crop features of 4 boxes saved" in capsys.readouterr().out
    labels = clustering.read_pseudo_labels(pred_file.with_name("preds_clustered_2clu.pkl"))
    assert sorted(labels) == tree.names
    assert {entry.label for entries in labels.values() for entry in entries} == {0, 1}
    assert all(len(entries) == 1 for entries in labels.values())
    np.testing.assert_array_equal(labels["000001.jpg"][0].box, tree.gt["000001.jpg"][0])
    monkeypatch.setattr(loading, "get_model", lambda *args, **kwargs: pytest.fail("features are cached"))
    assert cluster_for_OD.main([*argv, "--num_workers", "0", *DEVICE_FLAGS]) == 0
    assert "loaded from" in capsys.readouterr().out
    again = clustering.read_pseudo_labels(pred_file.with_name("preds_clustered_2clu.pkl"))
    assert {n: [e.label for e in es] for n, es in again.items()} == {n: [e.label for e in es] for n, es in labels.items()}


def test_cli_clusters_every_box_of_multi_box_predictions(tmp_path, monkeypatch, capsys):
    tree = make_voc_tree(tmp_path / "datasets")
    scored = {
        "000001.jpg": safe_files.ScoredBoxes(np.array([[8, 8, 40, 32], [0, 0, 16, 16]]), np.array([0.9, 0.2])),
        "000002.jpg": safe_files.ScoredBoxes(np.array([[32, 16, 56, 40]]), np.array([0.5])),
        "000004.jpg": safe_files.ScoredBoxes(np.array([[11, 7, 44, 40], [40, 0, 64, 20], [0, 30, 20, 48]]), np.array([0.8, 0.7, 0.1])),
    }
    safe_files.write_scored_predictions(tmp_path / "maskcut", scored)
    pred_file = tmp_path / "maskcut" / "preds.pkl"
    monkeypatch.setattr(loading, "get_model", lambda *args, **kwargs: tiny_vit(patch_size=16).to(TEST_DEVICE))
    argv = ["--pred_file", str(pred_file), "--nb_clusters", "3", "--datasets_root", str(tree.datasets_root)]
    assert cluster_for_OD.main([*argv, "--num_workers", "0", *DEVICE_FLAGS]) == 0
    assert "crop features of 6 boxes saved" in capsys.readouterr().out
    raw = safe_files.restricted_load(pred_file.with_name("preds_clustered_3clu.pkl"))
    assert raw["000004.jpg"]["predicted_bb"].tolist() == [[11, 7, 44, 40], [40, 0, 64, 20], [0, 30, 20, 48]]
    assert raw["000004.jpg"]["pseudo_label"].shape == (3,)
    labels = clustering.read_pseudo_labels(pred_file.with_name("preds_clustered_3clu.pkl"))
    assert {name: len(entries) for name, entries in labels.items()} == {"000001.jpg": 2, "000002.jpg": 1, "000004.jpg": 3}
    assert {entry.label for entries in labels.values() for entry in entries} == {0, 1, 2}
    np.testing.assert_array_equal(labels["000001.jpg"][1].box, [0, 0, 16, 16])


def test_cli_with_a_real_vit_checkpoint(voc_predictions, vit_tiny_checkpoint):
    tree, pred_file = voc_predictions
    weights = vit_tiny_checkpoint
    argv = ["--pred_file", str(pred_file), "--nb_clusters", "3", "--datasets_root", str(tree.datasets_root)]
    argv += ["--arch", "vit_tiny", "--pretrained_weights", str(weights), "--num_workers", "0", "--whitening", "pca"]
    assert cluster_for_OD.main([*argv, *DEVICE_FLAGS]) == 0
    feats = np.load(clustering.features_cache_file(pred_file, "vit_tiny", 16))["feats"]
    assert feats.shape == (4, 192)


def test_cli_reports_predictions_of_another_data_set(voc_predictions, tmp_path, capsys):
    tree, _ = voc_predictions
    other = tmp_path / "other"
    safe_files.write_predictions(other, {"999999.jpg": np.array([0, 0, 4, 4])})
    argv = ["--pred_file", str(other / "preds.pkl"), "--datasets_root", str(tree.datasets_root)]
    assert cluster_for_OD.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no prediction for any of the 4 images" in err
