"""Post-processing in worker processes while the caller keeps producing items."""

from __future__ import annotations

import math

import pytest

from lost.engine.postprocess import map_in_workers


def test_results_come_back_in_item_order_in_this_process():
    assert list(map_in_workers(math.factorial, iter(range(8)), 0)) == [1, 1, 2, 6, 24, 120, 720, 5040]


def test_workers_return_results_in_item_order_and_raise_an_error_at_its_item():
    stream = map_in_workers(math.sqrt, [16.0, 4.0, 9.0, 1.0, -1.0], 1, max_pending=2)
    assert [next(stream) for _ in range(4)] == [4.0, 2.0, 3.0, 1.0]
    with pytest.raises(ValueError, match="math domain error"):
        next(stream)


def test_items_are_consumed_lazily_while_results_stream():
    produced = []

    def items():
        for value in range(4):
            produced.append(value)
            yield value

    stream = map_in_workers(math.factorial, items(), 0)
    assert next(stream) == 1 and produced == [0]


def test_cutler_pseudo_masks_stream_in_record_order_with_failures(tmp_path):
    from lost.backbones import FeatureExtractor
    from lost.data.datasets import single_image_records
    from lost.engine.cutler_run import cutler_pseudo_masks
    from tests.conftest import tiny_vit, write_noise_images

    write_noise_images(tmp_path, [(40, 30), (30, 50)])
    (tmp_path / "000002.jpg").write_bytes(b"not an image")
    records = single_image_records(tmp_path)
    extractor = FeatureExtractor(tiny_vit(8), "vit_small", 8)
    results = list(cutler_pseudo_masks(extractor, records, batch_size=2, postprocess_workers=0, fixed_size=48))
    assert [result.index for result in results] == [0, 1, 2]
    assert results[0].masks.shape == (3, 30, 40) and results[1].masks.shape == (3, 50, 30)
    assert results[2].masks is None and "000002.jpg" in results[2].error
