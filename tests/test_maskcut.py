"""MaskCut on feature maps whose objects are worked out by hand, and against a transcription of the
published ``maskcut_forward`` loop (CutLER, maskcut/maskcut.py)."""

import numpy as np
import pytest
import scipy.linalg
import scipy.ndimage
import torch
import torch.nn.functional as F
from conftest import on_test_device
from PIL import Image
from synthetic_maps import noise_map, vit_like_map
from synthetic_maps import planted_map as noisy_planted_map

from lost.errors import LostError
from lost.geometry import seed_component
from lost.methods import MaskCutParams, maskcut
from lost.methods.maskcut import corner_votes, is_dropped, mask_iou, maskcut_batch, object_side, running_scores
from lost.methods.tokencut import is_degenerate, tokencut
from lost.viz.pictures import RANK_COLORS, draw_box, ranked_boxes_picture

E = torch.eye(6)
SOLVERS = ("dense", "auto")

cut = on_test_device(maskcut.maskcut)
"""MaskCut on TEST_DEVICE: there the Lanczos solves run ("auto"); the dense ones on the CPU."""
cut_batch = on_test_device(maskcut_batch)
reference_cut = on_test_device(tokencut)


def planted(grid, groups, background=E[0]):
    """(h*w, 6) features: `background` everywhere, `groups` = [(vector, [(row, col), ...]), ...]."""
    h, w = grid
    feats = background.repeat(h * w, 1).clone()
    for vector, cells in groups:
        for row, col in cells:
            feats[row * w + col] = vector
    return feats


def block(rows, cols):
    """Cells (row, col) of the rectangle rows x cols."""
    return [(row, col) for row in rows for col in cols]


def run(feats, grid, eigensolver="auto", scale=16, **kwargs):
    """MaskCut on an unpadded image of exactly the grid's size, `scale` pixels per cell."""
    return cut(feats, grid, (scale, scale), (grid[0] * scale, grid[1] * scale), eigensolver=eigensolver, **kwargs)


# --- hand-made maps ------------------------------------------------------------------------------
# Cliques of identical features in a binary graph, joined by eps: isolating a clique of s of the N
# patches costs Ncut ≈ eps (N - s) / s, so the larger object is cut first. Once an object's patches
# are removed (weight eps with everything), the next cut finds the next object; when only the
# background is left, the cut separates the removed patches from it and the seed falls among them,
# so the object it gives is an earlier one again: IoU 1 with the previous object, or nothing left
# once the earlier objects are taken out, and the loop ends.


@pytest.mark.parametrize("eigensolver", SOLVERS)
def test_two_planted_objects_give_two_boxes_larger_first(eigensolver):
    # grid 6x8, p = 16: object A rows 1-2 cols 1-2 (4 patches), object B rows 3-4 cols 5-7 (6)
    feats = planted((6, 8), [(E[1], block([1, 2], [1, 2])), (E[2], block([3, 4], [5, 6, 7]))])
    result = run(feats, (6, 8), eigensolver, max_objects=3)
    assert result.boxes.tolist() == [[80, 48, 128, 80], [16, 16, 48, 48]]
    assert result.boxes.dtype == np.int64
    assert result.box.tolist() == [80, 48, 128, 80]
    assert [np.flatnonzero(item.mask).tolist() for item in result.objects] == [[29, 30, 31, 37, 38, 39], [9, 10, 17, 18]]
    assert not any(item.corner_rule for item in result.objects)
    assert 0 < result.scores[1] <= result.scores[0] <= 1


@pytest.mark.parametrize("eigensolver", SOLVERS)
def test_three_planted_objects_give_three_boxes_by_size(eigensolver):
    # grid 8x10: 9 patches rows 4-6 cols 6-8, 6 patches rows 5-6 cols 1-3, 4 patches rows 1-2 cols 1-2;
    # the fourth cut finds the removed 4-patch object again (first removed patch in raster order)
    groups = [(E[1], block([1, 2], [1, 2])), (E[2], block([4, 5, 6], [6, 7, 8])), (E[3], block([5, 6], [1, 2, 3]))]
    result = run(planted((8, 10), groups), (8, 10), eigensolver, max_objects=5)
    assert result.boxes.tolist() == [[96, 64, 144, 112], [16, 80, 64, 112], [16, 16, 48, 48]]
    assert np.all(np.diff(result.scores) <= 0) and result.scores[-1] > 0


@pytest.mark.parametrize("eigensolver", SOLVERS)
def test_max_objects_caps_the_boxes(eigensolver):
    groups = [(E[1], block([1, 2], [1, 2])), (E[2], block([4, 5, 6], [6, 7, 8])), (E[3], block([5, 6], [1, 2, 3]))]
    assert run(planted((8, 10), groups), (8, 10), eigensolver, max_objects=2).boxes.tolist() == [
        [96, 64, 144, 112], [16, 80, 64, 112],
    ]  # fmt: skip
    assert len(run(planted((8, 10), groups), (8, 10), eigensolver, max_objects=1).boxes) == 1


@pytest.mark.parametrize("eigensolver", SOLVERS)
def test_a_later_object_with_nothing_left_after_removing_earlier_ones_ends_the_loop(eigensolver):
    # the 9-patch object is found first (rows 1-3), the 4-patch one second (rows 5-6); the third
    # cut's seed is the first removed patch in raster order, in the FIRST object: its component has
    # IoU 0 with the previous one and covers 9% of the grid, but holds no patch of its own
    groups = [(E[1], block([1, 2, 3], [1, 2, 3])), (E[2], block([5, 6], [6, 7]))]
    result = run(planted((8, 10), groups), (8, 10), eigensolver, max_objects=3)
    assert result.boxes.tolist() == [[16, 16, 64, 64], [96, 80, 128, 112]]


@pytest.mark.parametrize("eigensolver", SOLVERS)
def test_an_object_of_exactly_one_percent_of_the_patches_is_dropped(eigensolver):
    # grid 10x10: a 3x3 object, then a one-patch object (1/100 = 1%: dropped) or a two-patch one (kept)
    big = (E[1], block([1, 2, 3], [1, 2, 3]))
    one = run(planted((10, 10), [big, (E[2], [(7, 7)])]), (10, 10), eigensolver, max_objects=3)
    assert one.boxes.tolist() == [[16, 16, 64, 64]]
    two = run(planted((10, 10), [big, (E[2], [(7, 7), (7, 8)])]), (10, 10), eigensolver, max_objects=3)
    assert two.boxes.tolist() == [[16, 16, 64, 64], [112, 112, 144, 128]]


@pytest.mark.parametrize("eigensolver", SOLVERS)
def test_corner_rule_takes_the_centre_when_the_seed_side_holds_the_corners(eigensolver):
    # grid 7x7: a 5x5 object (25 patches) framed by a 24-patch background. The background is the
    # smaller clique, so it holds the largest |v| (TokenCut's seed) and all 4 corners: the object is
    # the centre. TokenCut takes the frame, whose box is the whole image.
    feats = planted((7, 7), [(E[1], block(range(1, 6), range(1, 6)))])
    result = run(feats, (7, 7), eigensolver)
    assert result.boxes.tolist() == [[16, 16, 96, 96]]
    assert result.objects[0].corner_rule
    assert result.objects[0].seed == 8, "the first centre patch (row 1, col 1): the largest entry of -v"
    assert reference_cut(feats, (7, 7), (16, 16), (112, 112), tau=0.15, eigensolver=eigensolver).box.tolist() == [0, 0, 112, 112]


def test_three_corners_on_the_seed_side_fire_the_corner_rule_two_do_not():
    # grid 3x3, corners 0, 2, 6, 8. Mean 1: v > 1 at {0, 2, 6}, three corners: the object is
    # v <= 1, seeded at the largest -v (index 8, v = -2)
    side = object_side(np.array([5.0, 0.0, 4.0, 0.0, -1.0, 0.0, 3.0, 0.0, -2.0]), (3, 3))
    assert side.corner_rule and side.seed == 8
    assert np.flatnonzero(side.part).tolist() == [1, 3, 4, 5, 7, 8]
    # mean 1/3: v > 1/3 at {0, 2}, two corners: TokenCut's side, seeded at the largest |v|
    side = object_side(np.array([5.0, 0.0, 4.0, 0.0, -1.0, 0.0, -3.0, 0.0, -2.0]), (3, 3))
    assert not side.corner_rule and side.seed == 0
    assert np.flatnonzero(side.part).tolist() == [0, 2]


def test_corner_rule_does_not_depend_on_the_eigenvectors_sign():
    # published: with -v the corner-holding part is v < mean and the seed's side wins; here the
    # vector is signed at its largest |v| first, so both signs give the same object
    vector = np.array([5.0, 0.0, 4.0, 0.0, -1.0, 0.0, 3.0, 0.0, -2.0])
    first, second = object_side(vector, (3, 3)), object_side(-vector, (3, 3))
    assert first.corner_rule and second.corner_rule and first.seed == second.seed == 8
    assert np.array_equal(first.part, second.part) and np.array_equal(first.eigenvector, second.eigenvector)


def test_a_corner_at_the_mean_does_not_vote_and_joins_the_object():
    # mean exactly -0.75 = v[6]: above it only corners 0 and 2, so the rule does not fire (v >= mean
    # would count three); patch 6 joins the seed's side, as in TokenCut
    side = object_side(np.array([3.0, -2.0, 3.0, -2.0, -2.0, -2.0, -0.75, -2.0, -2.0]), (3, 3))
    assert not side.corner_rule
    assert np.flatnonzero(side.part).tolist() == [0, 2, 6]


def test_corners_of_a_one_row_grid_count_twice():
    assert corner_votes(np.array([True, False, False, True]), (1, 4)) == 4
    assert corner_votes(np.array([True, False, False, False]), (1, 4)) == 2


@pytest.mark.parametrize(
    "feats, grid",
    [(torch.ones(12, 5) * 3, (3, 4)), (torch.zeros(12, 5), (3, 4)), (torch.eye(12), (3, 4)), (torch.eye(2), (1, 2))],
    ids=["constant", "zeros", "all-below-tau", "two-patches"],
)
def test_nothing_to_cut_gives_the_whole_image_with_score_zero(feats, grid):
    result = cut(feats, grid, (16, 16), (grid[0] * 16 - 6, grid[1] * 16 - 3))
    assert result.boxes.tolist() == [[0, 0, grid[1] * 16 - 3, grid[0] * 16 - 6]]
    assert result.scores.tolist() == [0.0]
    assert result.objects == ()


@pytest.mark.parametrize("eigensolver", SOLVERS)
def test_boxes_are_clipped_to_the_unpadded_image(eigensolver):
    feats = planted((4, 5), [(E[1], block([2, 3], [3, 4]))])
    result = cut(feats, (4, 5), (16, 16), (60, 75), eigensolver=eigensolver)
    assert result.box.tolist() == [48, 32, 75, 60]


# --- drop rules and scores, step by step --------------------------------------------------------


def grid_mask(count, cells):
    mask = np.zeros(count, dtype=bool)
    mask[cells] = True
    return mask


def test_overlap_of_exactly_one_half_is_kept_and_above_is_dropped():
    previous = grid_mask(100, [0, 1, 2])
    half = grid_mask(100, [0, 1, 2, 3, 4, 5])  # 3 / 6
    assert mask_iou(half, previous) == 0.5
    assert not is_dropped(half, previous, grid_mask(100, [3, 4, 5]))
    more = grid_mask(100, [0, 1, 2, 3, 4])  # 3 / 5
    assert is_dropped(more, previous, grid_mask(100, [3, 4]))


def test_one_percent_of_the_patches_is_dropped_and_more_is_kept():
    previous = grid_mask(100, [50, 51, 52])
    assert is_dropped(grid_mask(100, [7]), previous, grid_mask(100, [7]))
    assert not is_dropped(grid_mask(100, [7, 8]), previous, grid_mask(100, [7, 8]))


def test_an_object_with_no_patch_of_its_own_is_dropped():
    previous = grid_mask(100, [50, 51, 52])
    component = grid_mask(100, [0, 1, 2])
    assert is_dropped(component, previous, np.zeros(100, dtype=bool))


def crafted_cuts(monkeypatch, vectors):
    """Make the eigensolver return `vectors` one after the other (the drop rules on chosen cuts)."""
    queue = [np.asarray(vector, dtype=np.float64) for vector in vectors]
    monkeypatch.setattr(maskcut, "second_eigenvector", lambda weights, solver: (queue.pop(0), "dense"))


def indicator(count, cells, high=1.0, low=-0.1):
    vector = np.full(count, low)
    vector[cells] = high
    return vector


def test_an_overlapping_second_cut_is_dropped_and_ends_the_loop(monkeypatch):
    # grid 10x10: cut 1 takes cells 33-36 (row 3); cut 2 takes 33-38, IoU 4/6 with it: dropped,
    # and the third vector is never asked for
    crafted_cuts(monkeypatch, [indicator(100, [33, 34, 35, 36]), indicator(100, [33, 34, 35, 36, 37, 38])])
    result = run(torch.randn(100, 8, generator=torch.Generator().manual_seed(0)), (10, 10), max_objects=3)
    assert result.boxes.tolist() == [[48, 48, 112, 64]]


def test_an_overlap_of_exactly_one_half_is_kept(monkeypatch):
    # cut 1 takes 33-35; cut 2 takes 33-38, IoU 3/6 = 0.5 with it: kept, its own patches 36-38
    # (the earlier object's taken out) and its box theirs; cut 3 takes 90-91 (row 9)
    crafted_cuts(monkeypatch, [indicator(100, [33, 34, 35]), indicator(100, [33, 34, 35, 36, 37, 38]), indicator(100, [90, 91])])
    result = run(torch.randn(100, 8, generator=torch.Generator().manual_seed(0)), (10, 10), max_objects=3)
    assert result.boxes.tolist() == [[48, 48, 96, 64], [96, 48, 144, 64], [0, 144, 32, 160]]
    assert np.flatnonzero(result.objects[1].mask).tolist() == [36, 37, 38]


def test_scores_are_the_cut_association_made_non_increasing():
    assert running_scores([0.9, 0.95, 0.5, -0.2]).tolist() == [0.9, 0.9, 0.5, 0.0]
    assert running_scores([1.2]).tolist() == [1.0]


@pytest.mark.parametrize("eigensolver", SOLVERS)
def test_score_is_one_minus_the_cuts_eigenvalue(eigensolver):
    # the graph is two cliques of 4 and 16 patches joined by eps: the one object's score is
    # 1 - λ₂ of eigh(D - W, D) on that graph
    feats = planted((4, 5), [(E[1], block([1, 2], [2, 3]))])
    membership = np.zeros(20, dtype=bool)
    membership[[7, 8, 12, 13]] = True
    weights = np.where(membership[:, None] == membership[None, :], 1.0, 1e-5)
    degrees = weights.sum(axis=1)
    eigenvalues = scipy.linalg.eigh(np.diag(degrees) - weights, np.diag(degrees), eigvals_only=True)
    result = run(feats, (4, 5), eigensolver, max_objects=1)
    np.testing.assert_allclose(result.scores, [1 - eigenvalues[1]], rtol=0, atol=1e-12)


# --- the first object is TokenCut's --------------------------------------------------------------


def random_maps(count=24, seed=0):
    """(name, feats, grid): vit-like, noisy planted and noise maps over several grids."""
    rng = np.random.default_rng(seed)
    kinds = {"vit-like": vit_like_map, "planted": noisy_planted_map, "noise": noise_map}
    maps = []
    for index in range(count):
        grid = [(6, 8), (9, 7), (12, 10), (10, 10)][index % 4]
        name = list(kinds)[index % 3]
        maps.append((f"{name}-{index}", kinds[name](grid, rng), grid))
    return maps


MAPS = random_maps()


@pytest.mark.parametrize("eigensolver", SOLVERS)
def test_first_box_is_tokencuts_where_the_corner_rule_does_not_fire(eigensolver):
    fired = 0
    for _, feats, grid in MAPS:
        size = (grid[0] * 8 - 5, grid[1] * 8)
        result = cut(feats, grid, (8, 8), size, tau=0.15, eigensolver=eigensolver)
        reference = reference_cut(feats, grid, (8, 8), size, tau=0.15, eigensolver=eigensolver)
        if result.objects and result.objects[0].corner_rule:
            fired += 1
            continue
        assert result.box.tolist() == reference.box.tolist()
        if result.objects:
            assert result.objects[0].seed == reference.seed
            expected = seed_component(reference.partition, reference.seed, grid).reshape(-1)
            assert np.array_equal(result.objects[0].component, expected)
    assert 0 < fired < len(MAPS) - 5, "the maps must exercise both answers"


# --- against the published loop ------------------------------------------------------------------


def first_of_maximum(values, rtol=1e-9):
    """np.argmax, with values within rtol (relative to max |values|) of the maximum counted as tied
    and the first of them taken: the tie rule the module documents (TokenCut's)."""
    return int(np.argmax(values >= values.max() - np.abs(values).max() * rtol))


def published_maskcut(feats, grid, tau, max_objects, eps=1e-5):
    """CutLER's maskcut_forward, step by step, dense float64 eigh: painting of the earlier masks into
    the features, binary graph, corner rule, seed component, IoU / size drop with the zeroed
    mask kept as `current`, earlier masks subtracted from the output. Two adaptations, both
    documented in maskcut.py: v is signed positive at its largest |v| before the corner rule (the
    published answer depends on LAPACK's sign), and argmax ties go to the first index; the grid
    may be rectangular. Returns the max_objects output masks (h, w) float64, as published."""
    rows, cols = grid
    feats = feats.T.clone()
    dim, count = feats.shape
    painting = torch.zeros(grid, dtype=torch.float64)
    outputs, current = [], None
    for step in range(max_objects):
        if step > 0:
            painting = painting + current.unsqueeze(0)
            painting[painting > 0] = 1
            painting[painting <= 0] = 0
            feats = ((1 - painting) * feats.clone().view(dim, rows, cols)).view(dim, count)
        unit = F.normalize(feats, p=2, dim=0)
        affinity = (unit.transpose(0, 1) @ unit).numpy()
        affinity = affinity > tau
        affinity = np.where(affinity.astype(float) == 0, eps, affinity)
        degree_matrix = np.diag(np.sum(affinity, axis=1))
        _, eigenvectors = scipy.linalg.eigh(degree_matrix - affinity, degree_matrix, subset_by_index=[1, 2])
        vector = np.copy(eigenvectors[:, 0])
        vector = vector * np.sign(vector[first_of_maximum(np.abs(vector))])
        part = vector > np.sum(vector) / len(vector)
        seed = first_of_maximum(np.abs(vector))
        corners = part.reshape(grid)
        votes = int(corners[0][0]) + int(corners[0][-1]) + int(corners[-1][0]) + int(corners[-1][-1])
        reverse = True if votes >= 3 else part[seed] != 1
        if reverse:
            vector = vector * -1
            part = np.logical_not(part)
        seed = first_of_maximum(vector)
        labels, _ = scipy.ndimage.label(part.reshape(grid).astype(float))
        mask = torch.from_numpy((labels == labels[np.unravel_index(seed, grid)]).astype(np.float64))
        if step >= 1:
            ratio = torch.sum(mask) / mask.size()[0] / mask.size()[1]
            union = torch.sum((current > 0.5) | (mask > 0.5))
            if torch.sum((current > 0.5) & (mask > 0.5)).float() / union > 0.5 or ratio <= 0.01:
                mask = torch.zeros(grid, dtype=torch.float64)
        current = mask
        masked_out = 0 if not outputs else np.sum(outputs, axis=0)
        output = mask.numpy() - masked_out
        output[output <= 0] = 0
        outputs.append(output)
    return outputs


def published_boxes(outputs, scales, size):
    """Boxes of the published non-empty masks up to the first empty one (see maskcut.py)."""
    boxes = []
    for output in outputs:
        if not output.any():
            break
        rows, cols = np.nonzero(output)
        box = [scales[1] * cols.min(), scales[0] * rows.min(), scales[1] * (cols.max() + 1), scales[0] * (rows.max() + 1)]
        boxes.append([box[0], box[1], min(box[2], size[1]), min(box[3], size[0])])
    return boxes


def is_degenerate_map(feats, tau=0.15):
    unit = F.normalize(feats, p=2, dim=1)
    return is_degenerate(torch.where(unit @ unit.T > tau, 1.0, 1e-5))


@pytest.mark.parametrize("eigensolver", SOLVERS)
@pytest.mark.parametrize("max_objects", [3, 4])
def test_boxes_are_the_published_loops(eigensolver, max_objects):
    counts = {"objects": [], "dropped then back": 0}
    for name, feats, grid in MAPS:
        if is_degenerate_map(feats):
            continue  # published: whatever LAPACK returns; here the whole image (tested above)
        size = (grid[0] * 8, grid[1] * 8 - 3)
        outputs = published_maskcut(feats, grid, 0.15, max_objects)
        result = cut(feats, grid, (8, 8), size, tau=0.15, max_objects=max_objects, eigensolver=eigensolver)
        expected = published_boxes(outputs, (8, 8), size)
        assert result.boxes.tolist() == expected, name
        for item, output in zip(result.objects, outputs, strict=False):
            assert np.array_equal(item.mask, output.reshape(-1) > 0), name
        counts["objects"].append(len(expected))
        empty = [not output.any() for output in outputs]
        counts["dropped then back"] += any(empty[i] and not empty[i + 1] for i in range(len(empty) - 1))
    assert {1, 2, 3} <= set(counts["objects"]), "the maps must give one, two and three objects"
    assert counts["dropped then back"] > 0, "some map must show the published loop's comeback after a drop"


def test_noise_maps_include_a_degenerate_one():
    assert any(is_degenerate_map(feats) for _, feats, _ in MAPS)


def test_batch_equals_single_images():
    feats = torch.stack([feats for _, feats, grid in MAPS if grid == (6, 8)][:3])
    sizes = [(48, 64), (41, 60), (48, 57)]
    batched = cut_batch(feats, (6, 8), (8, 8), sizes)
    for image_feats, size, result in zip(feats, sizes, batched, strict=True):
        single = cut(image_feats, (6, 8), (8, 8), size)
        assert single.boxes.tolist() == result.boxes.tolist()
        assert single.scores.tolist() == result.scores.tolist()


# --- settings and picture ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [({"eigensolver": "arpack"}, "eigensolver"), ({"eps": 0.0}, "eps must be positive"), ({"max_objects": 0}, "max_objects")],
)
def test_bad_settings_are_reported(kwargs, message):
    with pytest.raises(ValueError, match=message):
        cut(torch.randn(12, 4), (3, 4), (16, 16), (48, 64), **kwargs)


def test_grid_mismatch_is_reported():
    with pytest.raises(ValueError, match="grid"):
        cut(torch.randn(12, 4), (3, 5), (16, 16), (48, 80))


@pytest.mark.parametrize("kwargs, message", [({"max_objects": 0}, "--max_objects 0"), ({"eps": -1.0}, "--eps -1.0")])
def test_bad_flags_are_one_line_user_errors(kwargs, message):
    with pytest.raises(LostError, match=message):
        MaskCutParams(**kwargs)


def test_picture_draws_every_box_in_its_rank_colour_with_a_label():
    image = Image.new("RGB", (80, 60), (128, 128, 128))
    boxes = np.array([[10, 10, 50, 40], [40, 30, 80, 60]])
    picture = ranked_boxes_picture(image, boxes, np.array([0.9, 0.4]))
    assert picture.size == (80, 60)
    assert picture.getpixel((10, 25)) == RANK_COLORS[0], "left edge of the best box"
    assert picture.getpixel((79, 50)) == RANK_COLORS[1], "right edge of the second box"
    label = [picture.getpixel((x, y)) for x in range(12, 40) for y in range(12, 22)]
    assert RANK_COLORS[0] in label, "a patch of the box colour"
    assert min(sum(pixel) for pixel in label) < 60, "dark (anti-aliased) text on it"
    assert picture.getpixel((30, 35)) == (128, 128, 128), "inside, away from the label: untouched"


def test_boxes_thinner_than_a_pixel_are_drawn_one_pixel_wide():
    # a small box in a scaled-down picture (the report's thumbnails): [10.2, 5, 10.9, 9] is 0.7 wide
    image = Image.new("RGB", (20, 12), (128, 128, 128))
    picture = draw_box(image, np.array([10.2, 5.0, 10.9, 9.0]), (255, 0, 0), width=1)
    assert picture.getpixel((10, 6)) == (255, 0, 0)
    ranked = ranked_boxes_picture(image, np.array([[10.2, 5.0, 10.9, 9.0]]), np.array([0.5]))
    assert ranked.getpixel((10, 8)) == RANK_COLORS[0]
