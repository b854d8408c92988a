"""images.py: decoding every image mode, scaling, normalization, padding, headers."""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_datasets import make_voc_tree

from lost import clustering
from lost.data import images
from lost.data.datasets import ImageRecord
from lost.errors import LostError


def write_png16_rgb(path: Path, values: np.ndarray) -> None:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one): values (H, W, 3) uint16."""
    height, width, _ = values.shape
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in values)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    path.write_bytes(png)


def rgb_array(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image)


def test_load_rgb_zero_byte_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(LostError, match=r"empty.jpg: image file is empty \(0 bytes\)"):
        images.load_rgb(path)


def test_load_rgb_truncated_jpeg(tmp_path):
    path = tmp_path / "cut.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(LostError, match="cut.jpg: cannot decode the image .*truncated"):
        images.load_rgb(path)


def test_load_rgb_text_file_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not an image\n")
    with pytest.raises(LostError, match="notes.jpg: not an image Pillow can read"):
        images.load_rgb(path)


def test_load_rgb_missing_file(tmp_path):
    with pytest.raises(LostError, match="absent.jpg: image file not found"):
        images.load_rgb(tmp_path / "absent.jpg")


def test_load_rgb_grayscale_repeats_the_channel(tmp_path):
    path = tmp_path / "grey.png"
    Image.fromarray(np.full((4, 6), 77, dtype=np.uint8)).save(path)
    assert (rgb_array(images.load_rgb(path)) == 77).all()


def test_load_rgb_cmyk(tmp_path):
    tif = tmp_path / "cmyk.tif"
    Image.new("CMYK", (6, 4), (0, 255, 255, 0)).save(tif)  # no cyan, full magenta + yellow: red
    assert rgb_array(images.load_rgb(tif))[0, 0].tolist() == [255, 0, 0]
    jpg = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (64, 48), (0, 0, 0, 0)).save(jpg)
    assert np.abs(rgb_array(images.load_rgb(jpg)).astype(int) - 255).max() <= 2  # white


def test_load_rgb_rgba_drops_alpha(tmp_path):
    path = tmp_path / "rgba.png"
    Image.new("RGBA", (6, 4), (10, 20, 30, 0)).save(path)
    assert rgb_array(images.load_rgb(path))[0, 0].tolist() == [10, 20, 30]
    la = tmp_path / "la.png"
    Image.new("LA", (6, 4), (90, 0)).save(la)
    assert rgb_array(images.load_rgb(la))[0, 0].tolist() == [90, 90, 90]


def test_load_rgb_palette_with_transparency_gives_palette_colours_without_warning(tmp_path):
    path = tmp_path / "palette.png"
    image = Image.new("P", (6, 4), 0)
    image.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    image.putpixel((1, 0), 1)
    image.save(path, transparency=bytes([0, 255] + [255] * 254))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pixels = rgb_array(images.load_rgb(path))
    assert pixels[0, 0].tolist() == [0, 0, 0]
    assert pixels[0, 1].tolist() == [200, 100, 50]


def test_load_rgb_scales_16_bit_grey_png_instead_of_clipping(tmp_path):
    path = tmp_path / "grey16.png"
    values = np.array([[0, 25700, 32768, 65535]], dtype=np.uint16)  # /257: 0, 100, 127.5, 255
    Image.fromarray(values).save(path)
    pixels = rgb_array(images.load_rgb(path))
    assert pixels[0, :, 0].tolist() == [0, 100, 128, 255]
    assert (pixels[..., 0] == pixels[..., 2]).all()


def test_load_rgb_16_bit_rgb_png(tmp_path):
    path = tmp_path / "rgb16.png"
    write_png16_rgb(path, np.array([[[0, 25700, 65535]]], dtype=np.uint16))
    assert rgb_array(images.load_rgb(path))[0, 0].tolist() == [0, 100, 255]


def test_image_smaller_than_a_patch_is_padded_to_one_patch(tmp_path):
    path = tmp_path / "tiny.png"
    Image.new("RGB", (5, 3), (255, 255, 255)).save(path)
    record = ImageRecord("tiny.png", path, None)
    assert images.padded_size(record, 16) == (16, 16)
    decoded = images.ImageFileDataset([record], 16)[0]
    tensor = decoded.image
    assert tensor.shape == (3, 16, 16) and decoded.index == 0 and decoded.size == decoded.original_size == (3, 5)
    white = (1 - np.array(images.IMAGENET_MEAN)) / np.array(images.IMAGENET_STD)
    np.testing.assert_allclose(tensor[:, 0, 0].numpy(), white, rtol=1e-6)
    assert (tensor[:, 3:, :] == 0).all() and (tensor[:, :, 5:] == 0).all()


def test_image_to_tensor_normalizes_with_imagenet_statistics():
    image = Image.new("RGB", (2, 1), (255, 0, 51))
    tensor = images.image_to_tensor(image)
    assert tensor.shape == (3, 1, 2) and tensor.dtype == torch.float32
    expected = [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (0.2 - 0.406) / 0.225]
    np.testing.assert_allclose(tensor[:, 0, 0].numpy(), expected, rtol=1e-6)


def test_image_to_tensor_equals_torchvision_totensor_normalize():
    from torchvision import transforms

    pixels = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    reference = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize(images.IMAGENET_MEAN, images.IMAGENET_STD)]
    )
    assert torch.equal(images.image_to_tensor(image), reference(image))


def test_pad_to_multiple_pads_bottom_right_with_zeros():
    t = torch.ones(3, 50, 65)
    padded = images.pad_to_multiple(t, 16)
    assert padded.shape == (3, 64, 80)
    assert (padded[:, :50, :65] == 1).all()
    assert padded[:, 50:, :].abs().sum() == 0 and padded[:, :, 65:].abs().sum() == 0
    exact = torch.ones(3, 48, 64)
    assert images.pad_to_multiple(exact, 16) is exact


def test_padded_size_reads_the_header_only(tmp_path):
    tiny = make_voc_tree(tmp_path)
    path = tiny.image_paths["000001.jpg"]
    assert images.padded_size(ImageRecord("a", path, None), 16) == (48, 64)
    assert images.padded_size(ImageRecord("a", path, None), 10) == (50, 70)
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 3 // 4])  # header intact, scan cut
    assert images.padded_size(ImageRecord("a", path, None), 8) == (48, 64)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(LostError, match="empty.jpg: cannot read the image header"):
        images.padded_size(ImageRecord("e", empty, None), 16)


def test_image_file_dataset_returns_sentinel_for_unreadable_image_in_a_worker(tmp_path):
    tiny = make_voc_tree(tmp_path)
    good = ImageRecord("000001.jpg", tiny.image_paths["000001.jpg"], None)
    bad_path = tmp_path / "bad.jpg"
    bad_path.write_text("no image")
    dataset = images.ImageFileDataset([good, ImageRecord("bad.jpg", bad_path, None)], pad_multiple=16)
    assert len(dataset) == 2
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=1, collate_fn=lambda item: item)
    good_image, bad_image = list(loader)
    assert good_image.image.shape == (3, 48, 64) and good_image.index == 0 and good_image.size == (48, 64)
    assert bad_image.image is None and bad_image.index == 1
    assert "bad.jpg: not an image Pillow can read" in bad_image.error


def test_max_size_caps_the_longer_side_and_keeps_the_original_size(tmp_path):
    path = tmp_path / "wide.jpg"
    Image.new("RGB", (4000, 1000), (200, 10, 10)).save(path)
    record = ImageRecord("wide.jpg", path, None)
    # 4000 x 1000 capped to 1000: scale 1/4 -> 1000 x 250, padded to 16 -> (256, 1008)
    assert images.capped_size(4000, 1000, 1000) == (1000, 250)
    assert images.capped_size(400, 300, 1000) == (400, 300)
    assert images.capped_size(400, 300, None) == (400, 300)
    assert images.padded_size(record, 16, max_size=1000) == (256, 1008)
    decoded = images.ImageFileDataset([record], 16, max_size=1000)[0]
    assert decoded.image.shape == (3, 256, 1008)
    assert decoded.size == (250, 1000) and decoded.original_size == (1000, 4000)


def test_rescale_box_maps_decoded_pixels_back_to_the_original():
    # decoded 250 x 1000 (H x W) from an original 1000 x 4000: x and y times 4
    box = np.array([16, 32, 64, 250])
    assert images.rescale_box(box, (250, 1000), (1000, 4000)).tolist() == [64.0, 128.0, 256.0, 1000.0]
    assert images.rescale_box(box, (250, 1000), (250, 1000)) is box


def test_read_image_size_is_pillow_width_height_capped_without_decoding(tmp_path):
    path = tmp_path / "wide.jpg"
    Image.new("RGB", (400, 100), (1, 2, 3)).save(path)
    assert images.read_image_size(path) == (400, 100)
    assert images.read_image_size(path, max_size=200) == (200, 50)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # header intact, scan cut
    assert images.read_image_size(path) == (400, 100)


def test_one_header_reader_for_padding_and_crops(tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (33, 17)).save(good)
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    # padding raises (the engine reports the image), the crop grid gets None (the crop's loader reports it)
    assert images.padded_size(ImageRecord("good.png", good, None), 16) == (32, 48)
    assert clustering._image_size(good) == images.read_image_size(good) == (33, 17)
    with pytest.raises(LostError, match="bad.png: cannot read the image header"):
        images.padded_size(ImageRecord("bad.png", bad, None), 16)
    assert clustering._image_size(bad) is None


def test_fixed_size_images_resize_with_lanczos_then_round_to_the_patch_multiple():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 100, 3), dtype=np.uint8))
    shown, network_input = images.fixed_size_images(image, 100, 16)
    assert shown.size == (100, 100) and network_input.size == (96, 96)
    assert np.array_equal(np.array(shown), np.array(image.resize((100, 100), Image.LANCZOS)))
    same_shown, same_input = images.fixed_size_images(image, 96, 16)
    assert np.array_equal(np.array(same_shown), np.array(same_input))


def test_image_file_dataset_with_a_fixed_size_keeps_the_original_size_and_the_pixels(tmp_path):
    path = tmp_path / "wide.png"
    Image.fromarray(np.full((30, 70, 3), 90, np.uint8)).save(path)
    record = ImageRecord(name="wide.png", path=path, gt_boxes=None)
    item = images.ImageFileDataset([record], 8, fixed_size=48, keep_pixels=True)[0]
    assert item.image.shape == (3, 48, 48) and item.size == (48, 48) and item.original_size == (30, 70)
    assert item.pixels.shape == (48, 48, 3) and item.pixels.dtype == np.uint8
    default = images.ImageFileDataset([record], 8)[0]
    assert default.image.shape == (3, 32, 72) and default.size == (30, 70) and default.pixels is None
    with pytest.raises(ValueError, match="max_size"):
        images.ImageFileDataset([record], 8, max_size=64, fixed_size=48)
