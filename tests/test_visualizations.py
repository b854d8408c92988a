"""Drawing boxes: exclusive corners become PIL's inclusive ones, and thin boxes stay visible."""

import numpy as np
from PIL import Image

from lost.viz.pictures import BOX_COLOR, draw_box, inclusive_corners


def test_exclusive_corners_become_inclusive_pixels():
    assert inclusive_corners(np.array([2, 3, 10, 8])) == [2.0, 3.0, 9.0, 7.0]


def test_a_box_thinner_than_a_pixel_is_drawn_as_one_pixel():
    assert inclusive_corners(np.array([4.0, 4.0, 4.5, 4.2])) == [4.0, 4.0, 4.0, 4.0]
    picture = np.asarray(draw_box(Image.new("RGB", (8, 8)), np.array([4.0, 4.0, 4.5, 4.2]), BOX_COLOR, width=1))
    assert picture[4, 4].tolist() == list(BOX_COLOR)


def test_an_outline_stays_inside_the_exclusive_box():
    picture = np.asarray(draw_box(Image.new("RGB", (10, 10)), np.array([2, 2, 6, 6]), BOX_COLOR, width=1))
    drawn = np.argwhere(picture.any(axis=2))
    assert drawn.min(axis=0).tolist() == [2, 2] and drawn.max(axis=0).tolist() == [5, 5]
