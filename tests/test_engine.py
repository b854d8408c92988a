"""The batched engine gives the one-image path's boxes; its sampler and splitter do their jobs.

The models run on TEST_DEVICE (``LOST_TEST_DEVICE``); on a GPU the engine pins its batches and
runs fp16 too."""

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TEST_DEVICE, method_params_for_tests, needs_cuda, tiny_vit

from lost.backbones import FeatureExtractor, build_model
from lost.data.datasets import single_image_records
from lost.data.images import image_to_tensor, load_rgb, pad_to_multiple
from lost.engine.discovery import (
    DiscoveryConfig,
    SizeBucketBatchSampler,
    attention_images_per_pass,
    discover,
    discover_batches,
    make_loader,
    read_padded_sizes,
)
from lost.eval.metrics import box_iou
from lost.methods import METHODS, DinoSegParams
from lost.methods.dinoseg import dino_seg
from lost.methods.lost import lost


def one_image_boxes(extractor: FeatureExtractor, folder: Path, dinoseg: bool = False) -> dict[str, list]:
    """Boxes computed image by image without the engine: decode, pad, extract, LOST."""
    boxes = {}
    for record in single_image_records(folder):
        image = load_rgb(record.path)
        padded = pad_to_multiple(image_to_tensor(image), extractor.pad_multiple)[None]
        size = (image.height, image.width)
        if dinoseg:
            attention, grid = extractor.cls_attention(padded)
            box = dino_seg(attention[0], grid, extractor.patch_size, size, head=1)
        else:
            features = extractor(padded)
            box = lost(features.feats[0], features.grid, features.scales, size).box
        boxes[record.name] = box.tolist()
    return boxes


def engine_boxes(extractor: FeatureExtractor, folder: Path, config: DiscoveryConfig) -> dict[str, list]:
    records = single_image_records(folder)
    found = list(discover(extractor, records, config))
    assert sorted(item.index for item in found) == list(range(len(records)))
    return {records[item.index].name: item.box.tolist() for item in found}


@pytest.fixture(scope="module")
def vit_extractor() -> FeatureExtractor:
    return FeatureExtractor(tiny_vit(patch_size=8).to(TEST_DEVICE), "vit_tiny", 8)


@pytest.fixture(scope="module")
def resnet_extractor() -> FeatureExtractor:
    torch.manual_seed(0)
    return FeatureExtractor(build_model("resnet50", 16, resnet_dilate=2).to(TEST_DEVICE), "resnet50", 16)


@pytest.mark.parametrize("batch_size", [1, 3, 8])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_vit_engine_boxes_equal_the_one_image_path(vit_extractor, mixed_images, batch_size, num_workers):
    expected = one_image_boxes(vit_extractor, mixed_images)
    assert len({tuple(box) for box in expected.values()}) > 3, "the set must give distinct boxes"
    config = DiscoveryConfig(batch_size=batch_size, num_workers=num_workers)
    assert engine_boxes(vit_extractor, mixed_images, config) == expected


@pytest.mark.parametrize("batch_size", [1, 3, 8])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_resnet_engine_boxes_equal_the_one_image_path(resnet_extractor, mixed_images, batch_size, num_workers):
    expected = one_image_boxes(resnet_extractor, mixed_images)
    config = DiscoveryConfig(batch_size=batch_size, num_workers=num_workers)
    assert engine_boxes(resnet_extractor, mixed_images, config) == expected


def test_dinoseg_engine_boxes_equal_the_one_image_path(vit_extractor, mixed_images):
    expected = one_image_boxes(vit_extractor, mixed_images, dinoseg=True)
    config = DiscoveryConfig(method="dinoseg", params=DinoSegParams(head=1), batch_size=4)
    assert engine_boxes(vit_extractor, mixed_images, config) == expected


@pytest.mark.parametrize("precision", ["bf16", pytest.param("fp16", marks=needs_cuda)])
def test_half_precision_boxes_stay_close_to_fp32(vit_extractor, mixed_images, precision):
    fp32 = engine_boxes(vit_extractor, mixed_images, DiscoveryConfig(batch_size=4))
    half = engine_boxes(vit_extractor, mixed_images, DiscoveryConfig(batch_size=4, precision=precision))
    assert fp32.keys() == half.keys()
    ious = [box_iou(np.asarray(half[name], float), np.asarray([fp32[name]], float))[0] for name in fp32]
    assert np.mean(ious) >= 0.9


@needs_cuda
def test_cuda_runs_decode_into_pinned_memory(vit_extractor, mixed_images):
    records = single_image_records(mixed_images)
    loader = make_loader(records, vit_extractor, DiscoveryConfig(batch_size=4, num_workers=2), TEST_DEVICE)
    assert loader.pin_memory
    batches = list(loader)
    assert all(batch.images.is_pinned() for batch in batches if batch.images is not None)
    assert sorted(index for batch in batches for index in batch.indices) == list(range(len(records)))


def test_unreadable_image_is_reported_and_the_others_go_on(vit_extractor, mixed_images):
    (mixed_images / "000003.jpg").write_bytes(b"not a jpeg")
    records = single_image_records(mixed_images)
    found = {records[item.index].name: item for item in discover(vit_extractor, records, DiscoveryConfig(batch_size=3))}
    assert found["000003.jpg"].box is None
    assert "000003.jpg" in found["000003.jpg"].error
    assert all(item.box is not None for name, item in found.items() if name != "000003.jpg")


def test_sampler_never_mixes_padded_sizes_and_yields_every_index_once():
    sizes = [(48, 64), (64, 48), (48, 64), None, (48, 64), (64, 48), (48, 64), (48, 64), None]
    sampler = SizeBucketBatchSampler(sizes, batch_size=3)
    batches = list(sampler)
    assert batches == [[0, 2, 4], [6, 7], [1, 5], [3, 8]]
    assert len(sampler) == len(batches)
    assert sorted(i for batch in batches for i in batch) == list(range(len(sizes)))
    assert all(len({sizes[i] for i in batch}) == 1 for batch in batches)


def test_padded_sizes_come_from_the_headers(mixed_images):
    records = single_image_records(mixed_images)
    # widths x heights 64x48, 48x64, 50x40, 64x48, 33x17 padded to 16 -> (48, 64), (64, 48), (48, 64), (48, 64), (32, 48)
    assert read_padded_sizes(records, 16)[:5] == [(48, 64), (64, 48), (48, 64), (48, 64), (32, 48)]


def test_memory_splitter_splits_batches_that_exceed_the_budget():
    # 48x64 with p = 16: T = 3 * 4 + 1 = 13 tokens; 6 heads -> 6 * 13 * 13 * 4 = 4056 bytes per image
    assert attention_images_per_pass((48, 64), 16, 6, budget=4056 * 3) == 3
    assert attention_images_per_pass((48, 64), 16, 6, budget=100) == 1
    sampler = SizeBucketBatchSampler([(48, 64)] * 7, batch_size=8, max_batch_for_size=lambda size: 3)
    assert list(sampler) == [[0, 1, 2], [3, 4, 5], [6]]
    assert len(sampler) == 3


def test_memory_budget_counts_every_prefix_token():
    # 48x64 with p = 16 and CLS + 4 registers: T = 3 * 4 + 5 = 17 tokens -> 6 * 17 * 17 * 4 = 6936 bytes per image;
    # counted with one prefix token (13 tokens, 4056 bytes) the same budget would take 3 images
    assert attention_images_per_pass((48, 64), 16, 6, budget=6936 * 2, prefix_tokens=5) == 2
    assert attention_images_per_pass((48, 64), 16, 6, budget=6936 * 2) == 3


def test_memory_splitter_bounds_real_runs(vit_extractor, mixed_images):
    config = DiscoveryConfig(batch_size=8, memory_budget=1)
    assert engine_boxes(vit_extractor, mixed_images, config) == one_image_boxes(vit_extractor, mixed_images)


def test_unknown_precision_is_a_clear_error(vit_extractor, mixed_images):
    from lost.errors import LostError

    with pytest.raises(LostError, match="--precision"):
        list(discover(vit_extractor, single_image_records(mixed_images), DiscoveryConfig(precision="fp8")))


def test_boxes_are_whole_pixels_for_vits(vit_extractor, mixed_images):
    boxes = engine_boxes(vit_extractor, mixed_images, DiscoveryConfig(batch_size=2))
    assert all(np.asarray(box).dtype.kind == "i" for box in boxes.values())


def test_results_stream_one_list_per_same_size_batch(vit_extractor, mixed_images):
    records = single_image_records(mixed_images)
    sizes = read_padded_sizes(records, 8)
    batches = list(discover_batches(vit_extractor, records, DiscoveryConfig(batch_size=3)))
    assert [[found.index for found in batch] for batch in batches] == list(SizeBucketBatchSampler(sizes, 3))


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_gives_the_same_boxes_batched_and_one_image_at_a_time(vit_extractor, mixed_images, tmp_path, method):
    params = method_params_for_tests(method, tmp_path, vit_extractor.model.embed_dim)
    entry = METHODS[method]
    expected = {}
    for record in single_image_records(mixed_images):
        image = load_rgb(record.path)
        padded = pad_to_multiple(image_to_tensor(image), vit_extractor.pad_multiple)[None]
        features = vit_extractor.extract(padded, entry.needs)
        expected[record.name] = entry.discover(features, [(image.height, image.width)], params)[0].box.tolist()
    config = DiscoveryConfig(method=method, params=params, batch_size=4, num_workers=2)
    assert engine_boxes(vit_extractor, mixed_images, config) == expected


def test_multi_box_results_come_with_every_box_and_score_in_original_pixels(vit_extractor, mixed_images):
    # max_size 32 scales the 64-pixel images down by 2 (and 50x40 to 32x26): every box of an
    # image comes back in its own pixels, like its top box, each edge e at ceil(e * to / from - 1/2)
    params = METHODS["maskcut"].params(max_objects=3)
    records = single_image_records(mixed_images)
    expected = {}
    for record in records:
        image = load_rgb(record.path, 32)
        padded = pad_to_multiple(image_to_tensor(image), vit_extractor.pad_multiple)[None]
        result = METHODS["maskcut"].discover(vit_extractor.extract(padded, {"feats"}), [(image.height, image.width)], params)[0]
        original = load_rgb(record.path)
        scale = np.array([original.width / image.width, original.height / image.height] * 2)
        expected[record.name] = (np.ceil(result.boxes * scale - 0.5 - 1e-9), result.scores)
    config = DiscoveryConfig(method="maskcut", params=params, batch_size=4, max_size=32)
    found = {records[item.index].name: item for item in discover(vit_extractor, records, config)}
    assert any(len(item.boxes) > 1 for item in found.values()), "some image must have several boxes"
    for name, (boxes, scores) in expected.items():
        assert found[name].boxes.tolist() == boxes.tolist()
        assert found[name].scores.tolist() == scores.tolist() and found[name].ranked
        assert found[name].box.tolist() == found[name].boxes[0].tolist()


def test_one_box_methods_give_one_unranked_box_of_score_1(vit_extractor, mixed_images):
    records = single_image_records(mixed_images)
    for item in discover(vit_extractor, records, DiscoveryConfig()):
        assert item.boxes.tolist() == [item.box.tolist()] and item.scores.tolist() == [1.0] and not item.ranked
        assert item.masks is None


def test_maskcut_top_box_is_tokencuts_at_the_same_tau_unless_the_corner_rule_fired(vit_extractor, mixed_images):
    records = single_image_records(mixed_images)
    tokencut_config = DiscoveryConfig(method="tokencut", params=METHODS["tokencut"].params(tau=0.15), batch_size=4)
    tokencut_boxes = engine_boxes(vit_extractor, mixed_images, tokencut_config)
    found = {records[item.index].name: item for item in discover(vit_extractor, records, DiscoveryConfig(method="maskcut", batch_size=4))}
    plain = [name for name, item in found.items() if not (item.result.objects and item.result.objects[0].corner_rule)]
    assert len(plain) >= 3, "most images must keep TokenCut's side"
    assert {name: found[name].box.tolist() for name in plain} == {name: tokencut_boxes[name] for name in plain}
