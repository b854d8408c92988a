"""--refine: CutLER's dense CRF and the bilateral solver on any method's masks."""

from __future__ import annotations

import functools
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lost.errors import LostError
from lost.refine import crf
from lost.refine.masks import check_refinement, refine_file_masks, refine_masks

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def two_halves() -> np.ndarray:
    """32 x 32: black left half, white right half."""
    image = np.zeros((32, 32, 3), np.uint8)
    image[:, 16:] = 255
    return image


def test_unaries_of_a_zero_one_mask_are_the_negative_log_softmax_of_its_logits():
    unaries = crf.crf_unaries(np.array([[1.0, 0.0]]), (1, 2))
    # softmax([0, 1]) = (1 / (1 + e), e / (1 + e)) = (0.268941, 0.731059)
    np.testing.assert_allclose(unaries, [[1.313262, 0.313262], [0.313262, 1.313262]], rtol=1e-6)


def test_unaries_upsample_the_mask_bilinearly_with_half_pixel_centres():
    unaries = crf.crf_unaries(np.array([[1.0, 0.0]]), (1, 4))
    # foreground 1, 0.75, 0.25, 0: sample points x = -0.25 (clamped), 0.25, 0.75, 1.25 (clamped)
    foreground = np.array([1.0, 0.75, 0.25, 0.0])
    probability = 1 / (1 + np.exp(-(2 * foreground - 1)))
    np.testing.assert_allclose(unaries[1], -np.log(probability), rtol=1e-6)


def test_crf_snaps_a_mask_to_the_edge_of_the_image():
    mask = np.zeros((32, 32), dtype=bool)
    mask[:, :18] = True
    refined = crf.dense_crf(two_halves(), mask)
    expected = np.zeros((32, 32), dtype=bool)
    expected[:, :16] = True
    assert np.array_equal(refined, expected)


@pytest.mark.parametrize("name", ["chelsea.jpg", "rocket.jpg"])
def test_crf_of_an_empty_mask_is_empty(name):
    image = np.array(Image.open(EXAMPLES / name).convert("RGB").resize((64, 64), Image.LANCZOS))
    assert not crf.dense_crf(image, np.zeros((8, 8))).any()


def test_missing_pydensecrf_is_one_line_naming_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    with pytest.raises(LostError, match="pip install pydensecrf2"):
        crf.check_available()
    with pytest.raises(LostError, match="pydensecrf2"):
        refine_masks(two_halves(), np.zeros((1, 32, 32), dtype=bool), "crf")


@pytest.mark.parametrize("kind", ["crf", "bilateral"])
def test_refinement_snaps_a_mask_that_is_off_by_two_pixels(kind):
    image = np.zeros((48, 48, 3), np.uint8)
    image[12:36, 12:36] = 255
    mask = np.zeros((48, 48), dtype=bool)
    mask[12:36, 12:38] = True
    refined = refine_masks(image, np.stack([mask, np.zeros_like(mask)]), kind)
    assert refined.shape == (2, 48, 48)
    assert np.array_equal(refined[0], image[..., 0] == 255)
    assert not refined[1].any()


@pytest.mark.parametrize("kind", ["crf", "bilateral"])
def test_refinement_far_from_the_mask_keeps_the_coarse_mask(kind):
    image = two_halves()
    checkers = (np.indices((32, 32)).sum(axis=0) % 2).astype(bool)
    refined = refine_masks(image, checkers[None], kind)
    assert np.array_equal(refined[0], checkers)


def test_bad_refinement_requests_are_refused():
    with pytest.raises(ValueError, match="not one of"):
        check_refinement("grabcut")
    with pytest.raises(ValueError, match="do not match"):
        refine_masks(two_halves(), np.zeros((1, 16, 16), dtype=bool), "bilateral")


def test_refinement_pickles_for_worker_processes():
    refine = pickle.loads(pickle.dumps(functools.partial(refine_masks, kind="crf")))
    mask = np.zeros((1, 32, 32), dtype=bool)
    mask[0, :, :18] = True
    assert refine(two_halves(), mask)[0, :, :16].all()


def test_refinement_of_an_image_file_decodes_it_at_its_own_size(tmp_path):
    image = np.zeros((48, 48, 3), np.uint8)
    image[12:36, 12:36] = 255
    Image.fromarray(image).save(tmp_path / "square.png")
    mask = np.zeros((1, 48, 48), dtype=bool)
    mask[0, 12:36, 12:38] = True
    assert np.array_equal(refine_file_masks(tmp_path / "square.png", mask, "crf")[0], image[..., 0] == 255)
