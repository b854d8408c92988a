"""CutLER's detector stage, piece by piece: DropLoss against the published ``_forward_box`` loss,
copy-paste against the published ``copy_and_paste``, and the self-training merge against the
published script, each on inputs built for their edge cases, plus hand-computed cases."""

import copy
import random

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch

pytest.importorskip("detectron2.engine", reason="detectron2 is not installed: run bash tools/install_detectron2.sh")

import published_cutler_detector as published
from detectron2.layers import ShapeSpec
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from lost.detection.cutler import copy_paste, droploss, mapper, self_training
from lost.detection.cutler import training as cutler_training
from lost.detection.cutler.roi_heads import DropLossOutputLayers

# ----------------------------------------------------------------------------------------------
# DropLoss: hand-computed weights


def test_max_iou_is_zero_without_intersection_and_the_largest_overlap_otherwise():
    boxes = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [10, 0, 20, 10]])
    gt = torch.tensor([[5.0, 0, 15, 10], [0, 0, 10, 10]])
    # box 0: IoU 50/150 with gt 0, 1 with gt 1; box 1: no overlap; box 2: touches gt 1 (area 0), 1/3 with gt 0
    assert droploss.max_iou(boxes, gt).tolist() == pytest.approx([1.0, 0.0, 1 / 3])
    assert droploss.max_iou(boxes, torch.zeros(0, 4)).tolist() == [0.0, 0.0, 0.0]


def test_a_box_at_exactly_the_threshold_is_dropped():
    # [9, 9, 10, 10] inside [0, 0, 10, 10]: IoU 1 / 100 = 0.01, not above 0.01.
    pred = [torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10]])]
    matched = [torch.tensor([[9.0, 9, 10, 10], [9.0, 9, 10, 10]])]
    assert droploss.droploss_weights(pred, matched, 0.01).tolist() == [0.0, 0.0]
    assert droploss.droploss_weights(pred, matched, 0.009).tolist() == [1.0, 1.0]


def test_only_the_first_k_matched_rows_count_as_ground_truth():
    # First 100 rows hold 2 distinct boxes (A, B), so rows 0-1 (A, A) are the ground truth: B is missed.
    a, b = [0.0, 0, 10, 10], [50.0, 50, 60, 60]
    matched = torch.tensor([a, a] + [b] * 98 + [[80.0, 80, 90, 90]])
    assert published_rows(matched) == [a, a]
    pred = torch.tensor([b, a] + [[80.0, 80, 90, 90]] * 99)
    weights = droploss.droploss_weights([pred], [matched], 0.01)
    assert weights[:2].tolist() == [0.0, 1.0] and weights[2:].sum() == 0


def published_rows(matched):
    return droploss.published_gt_rows(matched).tolist()


def test_weighted_loss_averages_over_all_proposals():
    scores = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    classes = torch.tensor([0, 1])
    ce0 = -torch.log_softmax(scores[0], 0)[0]
    loss = droploss.weighted_classification_loss(scores, classes, torch.tensor([1.0, 0.0]))
    assert loss.item() == pytest.approx(ce0.item() / 2)
    assert (
        droploss.weighted_classification_loss(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), torch.zeros(0)) == 0
    )


# ----------------------------------------------------------------------------------------------
# DropLoss: the box predictor against the published loss


def predictor(use_droploss=True, thresh=0.01, weights=(10.0, 10.0, 5.0, 5.0)):
    cfg = cutler_training.load_config(str(cutler_training.DEFAULT_CONFIG), ["MODEL.DEVICE", "cpu"])
    cfg.MODEL.ROI_HEADS.USE_DROPLOSS, cfg.MODEL.ROI_HEADS.DROPLOSS_IOU_THRESH = use_droploss, thresh
    return DropLossOutputLayers(cfg, ShapeSpec(channels=8), box2box_transform=Box2BoxTransform(weights=weights))


def synthetic_proposals(seed, sizes=(7, 120), with_gt=(True, True), overlapping=False):
    """Proposals of images 40 x 40 and 200 x 200 with matched ground truth (three boxes repeated,
    then a far box from the middle on: past row 100 in the second image), random labels and
    predictions; `overlapping`: one matched box over everything, small deltas."""
    generator = torch.Generator().manual_seed(seed)
    proposals = []
    for index, (count, has_gt) in enumerate(zip(sizes, with_gt)):
        xy = torch.rand(count, 2, generator=generator) * 20
        wh = 5 + torch.rand(count, 2, generator=generator) * 15
        boxes = torch.cat([xy, xy + wh], 1)
        item = Instances((40 + 160 * index, 40 + 160 * index))
        item.proposal_boxes = Boxes(boxes)
        item.gt_classes = (torch.rand(count, generator=generator) > 0.5).long()
        if has_gt:
            gt = boxes[torch.randint(0, 3, (count,), generator=generator)]
            if overlapping:
                gt[:] = torch.tensor([0.0, 0, 45, 45])  # over every box
            else:
                gt[count // 2 :] = torch.tensor([150.0, 150, 160, 160])  # far from every prediction
            item.gt_boxes = Boxes(gt)
        proposals.append(item)
    total = sum(sizes)
    scores = torch.randn(total, 2, generator=generator, requires_grad=False)
    deltas = torch.randn(total, 4, generator=generator) * (0.01 if overlapping else 0.3)
    return (scores, deltas), proposals


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_droploss_equals_the_published_stage_loss(seed):
    head = predictor()
    predictions, proposals = synthetic_proposals(seed)
    with EventStorage():
        ours = head.losses(predictions, proposals)
    expected = published.droploss_stage_losses(predictions, proposals, head.box2box_transform, 0.01)
    weights = head.droploss_weights(predictions[1], proposals)
    assert 0 < weights.sum() < len(weights)  # some proposals are dropped, some kept
    assert ours["loss_cls"].item() == pytest.approx(expected["loss_cls"].item(), rel=1e-6)
    assert ours["loss_box_reg"].item() == pytest.approx(expected["loss_box_reg"].item(), rel=1e-5)


def test_droploss_equals_the_plain_loss_when_every_proposal_overlaps():
    predictions, proposals = synthetic_proposals(3, overlapping=True)
    with EventStorage():
        dropped = predictor().losses(predictions, proposals)
        plain = predictor(use_droploss=False).losses(predictions, proposals)
    assert predictor().droploss_weights(predictions[1], proposals).min() == 1
    assert dropped["loss_cls"].item() == pytest.approx(plain["loss_cls"].item(), rel=1e-6)
    assert dropped["loss_box_reg"].item() == plain["loss_box_reg"].item()


def test_an_image_without_ground_truth_falls_back_to_the_plain_loss():
    predictions, proposals = synthetic_proposals(4, with_gt=(True, False))
    predictions[0][:] = 0
    with EventStorage():
        ours = predictor().losses(predictions, proposals)
        plain = predictor(use_droploss=False).losses(predictions, proposals)
    expected = published.droploss_stage_losses(predictions, proposals, Box2BoxTransform((10.0, 10.0, 5.0, 5.0)), 0.01)
    assert ours["loss_cls"].item() == pytest.approx(np.log(2)) == plain["loss_cls"].item()
    assert ours["loss_cls"].item() == pytest.approx(expected["loss_cls"].item())


def test_zero_matched_boxes_of_a_later_stage_drop_every_proposal_of_that_image():
    predictions, proposals = synthetic_proposals(5, overlapping=True)
    proposals[1].gt_boxes = Boxes(torch.zeros(len(proposals[1]), 4))  # what a later stage gives an empty image
    weights = predictor().droploss_weights(predictions[1], proposals)
    assert weights[:7].min() == 1 and weights[7:].max() == 0


# ----------------------------------------------------------------------------------------------
# Copy-paste


def square(height, width, y0, y1, x0, x1):
    mask = np.zeros((height, width), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def annotated(height, width, masks, classes, seed):
    image = torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (3, height, width), dtype=np.uint8))
    masks = torch.as_tensor(np.array(masks, bool).reshape(-1, height, width))
    return copy_paste.AnnotatedImage(image, masks, copy_paste.mask_boxes(masks), torch.as_tensor(classes).long())


def test_a_donor_at_full_size_replaces_pixels_and_trims_the_covered_recipient():
    # Same 8 x 8 size, ratio 1: no resize, no offset. B covers 4 of A's 16 pixels (< 0.5): B pasted.
    recipient = annotated(8, 8, [square(8, 8, 0, 4, 0, 4)], [0], seed=1)
    donor = annotated(8, 8, [square(8, 8, 2, 6, 2, 6)], [0], seed=2)
    params = copy_paste.CopyPasteParams(rate=1.0, min_ratio=1.0, max_ratio=1.0)
    out = copy_paste.paste(recipient, donor, params, random.Random(0), np.random.RandomState(0))
    b = torch.from_numpy(square(8, 8, 2, 6, 2, 6))
    assert torch.equal(out.image, torch.where(b, donor.image, recipient.image))
    assert torch.equal(out.masks[0], recipient.masks[0] & ~b) and torch.equal(out.masks[1], b)
    assert out.boxes.tolist() == [[0, 0, 4, 4], [2, 2, 6, 6]]


def test_a_donor_covering_half_a_recipient_object_is_left_out():
    recipient = annotated(8, 8, [square(8, 8, 0, 4, 0, 4)], [0], seed=1)
    donor = annotated(8, 8, [square(8, 8, 0, 2, 0, 4)], [0], seed=2)  # 8 of 16 pixels: exactly half
    params = copy_paste.CopyPasteParams(rate=1.0, min_ratio=1.0, max_ratio=1.0)
    assert copy_paste.paste(recipient, donor, params, random.Random(0), np.random.RandomState(0)) is recipient


def test_an_empty_recipient_gets_boxes_moved_along_x_by_the_x_offset():
    # Donor 8 x 16 with an object at x 0-4, y 0-2; recipient 8 x 16, ratio 0.5: 4 x 8 pasted at
    # (x, y) = (rng.randint(0, 8), rng.randint(0, 4)).
    recipient = annotated(8, 16, np.zeros((0, 8, 16)), [], seed=1)
    donor = annotated(8, 16, [square(8, 16, 0, 2, 0, 4)], [0], seed=2)
    params = copy_paste.CopyPasteParams(rate=1.0, min_ratio=0.5, max_ratio=0.5)

    def offsets(seed):
        draws = random.Random(seed)
        draws.random(), draws.uniform(0.5, 0.5)
        return draws.randint(0, 8), draws.randint(0, 4)

    seed = next(seed for seed in range(100) if offsets(seed)[0] != offsets(seed)[1])
    x_shift, y_shift = offsets(seed)
    out = copy_paste.paste(recipient, donor, params, random.Random(seed), np.random.RandomState(seed))
    assert out.boxes.tolist() == [[x_shift, y_shift, x_shift + 2, y_shift + 1]]
    assert copy_paste.mask_boxes(out.masks).tolist() == [[x_shift, y_shift, x_shift + 2, y_shift + 1]]


def detectron2_item(item: copy_paste.AnnotatedImage):
    instances = published.bitmask_instances(tuple(item.image.shape[1:]), item.boxes, item.classes, item.masks)
    return {"image": item.image.clone(), "instances": instances, "file_name": "x.jpg"}


def seeded_batch():
    """Five images, image i receiving from image 4 - i: an empty 24 x 40 one (from the last), a
    32 x 48 one with 3 objects (from the fourth), a 40 x 32 one with a large and a small object
    (its own donor: its large object, pasted back, often covers half of one of its objects), a
    32 x 32 one with an empty mask (covered fraction NaN: never receives), a 16 x 16 one (from the
    empty image: never receives)."""
    return [
        annotated(24, 40, np.zeros((0, 24, 40)), [], seed=4),
        annotated(32, 48, [square(32, 48, 2, 12, 3, 20), square(32, 48, 10, 30, 25, 45), square(32, 48, 0, 6, 0, 6)],
                  [0, 0, 0], seed=3),
        annotated(40, 32, [square(40, 32, 5, 35, 4, 28), square(40, 32, 30, 40, 0, 10)], [0, 0], seed=5),
        annotated(32, 32, [square(32, 32, 0, 0, 0, 0), square(32, 32, 4, 20, 4, 20)], [0, 0], seed=6),
        annotated(16, 16, [square(16, 16, 2, 8, 2, 8), square(16, 16, 9, 15, 9, 15)], [0, 0], seed=7),
    ]  # fmt: skip


@pytest.mark.parametrize("seed", range(6))
def test_copy_paste_on_a_seeded_batch_equals_the_published_one(seed):
    batch = [detectron2_item(item) for item in seeded_batch()]
    random.seed(seed)
    np.random.seed(seed)
    expected = published.copy_and_paste(copy.deepcopy(batch[::-1]), copy.deepcopy(batch), fix_swap=True)
    ours = mapper.copy_paste_inputs(
        batch, copy_paste.CopyPasteParams(), random.Random(seed), np.random.RandomState(seed)
    )
    for mine, theirs in zip(ours, expected, strict=True):
        assert torch.equal(mine["image"], theirs["image"])
        assert torch.equal(mine["instances"].gt_masks.tensor, theirs["instances"].gt_masks.tensor)
        assert torch.equal(mine["instances"].gt_classes, theirs["instances"].gt_classes)
        assert torch.allclose(mine["instances"].gt_boxes.tensor, theirs["instances"].gt_boxes.tensor)
        assert mine["file_name"] == "x.jpg"


def test_the_published_empty_recipient_boxes_swap_the_offsets():
    batch = [detectron2_item(item) for item in seeded_batch()]
    swapped_seen = False
    for seed in range(6):
        random.seed(seed)
        np.random.seed(seed)
        as_published = published.copy_and_paste(copy.deepcopy(batch[::-1]), copy.deepcopy(batch))[0]
        random.seed(seed)
        np.random.seed(seed)
        fixed = published.copy_and_paste(copy.deepcopy(batch[::-1]), copy.deepcopy(batch), fix_swap=True)[0]
        difference = (as_published["instances"].gt_boxes.tensor - fixed["instances"].gt_boxes.tensor)[:, :2]
        assert torch.allclose(difference[:, 0], -difference[:, 1])  # x gained what y lost
        swapped_seen |= bool(difference.abs().sum() > 0)
    assert swapped_seen


def test_copy_paste_draws_depend_on_seed_rank_and_iteration_only():
    first, again, other = (
        mapper.step_generators(0, 0, 5),
        mapper.step_generators(0, 0, 5),
        mapper.step_generators(0, 1, 5),
    )
    assert first[0].random() == again[0].random() != other[0].random()
    assert first[1].randint(1 << 30) == again[1].randint(1 << 30)


def test_the_loader_wrapper_pastes_with_the_generators_of_the_current_iteration():
    batches = [[detectron2_item(item) for item in seeded_batch()] for _ in range(2)]
    iterations = iter([7, 8])  # the trainer's iteration when each batch is drawn
    wrapped = list(mapper.CopyPasteBatches(batches, copy_paste.CopyPasteParams(), 3, 1, lambda: next(iterations)))
    for step, (batch, out) in enumerate(zip(batches, wrapped, strict=True)):
        expected = mapper.copy_paste_inputs(
            batch, copy_paste.CopyPasteParams(), *mapper.step_generators(3, 1, 7 + step)
        )
        assert all(torch.equal(a["image"], b["image"]) for a, b in zip(out, expected, strict=True))
        assert any(not torch.equal(a["image"], b["image"]) for a, b in zip(out, batch, strict=True))


# ----------------------------------------------------------------------------------------------
# Self-training merge


def rle(mask):
    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode()}


def annotation(image_id, mask, **extra):
    ys, xs = np.nonzero(mask)
    bbox = (
        [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
        if len(xs)
        else [0.0, 0.0, 0.0, 0.0]
    )
    return {"image_id": image_id, "category_id": 1, "bbox": bbox, "segmentation": rle(mask), **extra}


def merge_inputs():
    """Image 1 (10 x 20): previous masks P0 (IoU 0.6 with the kept prediction), P1 (IoU 0.4),
    P2 (empty); image 2: previous masks, predictions all below the threshold; image 3: a
    prediction at exactly the threshold and no previous masks; image 4: no predictions."""
    h, w = 10, 20
    pred_mask = square(h, w, 0, 10, 0, 10)  # 100 px
    previous = {
        "images": [{"id": i, "file_name": f"{i}.jpg", "width": h, "height": w} for i in (1, 2, 4)],
        "annotations": [
            annotation(1, square(h, w, 0, 10, 0, 6), id=11),  # 60 px inside: IoU 0.6
            annotation(2, square(h, w, 0, 5, 0, 5), id=12),
            annotation(1, square(h, w, 0, 10, 6, 16), id=13),  # 40 px inside, union 160: IoU 0.25
            annotation(1, np.zeros((h, w), bool), id=14),
            annotation(4, square(h, w, 1, 3, 1, 3), id=15),
        ],
    }
    predictions = [
        annotation(1, pred_mask, score=0.9),
        annotation(2, square(h, w, 0, 5, 0, 5), score=0.5),
        annotation(3, square(h, w, 2, 4, 2, 4), score=0.7),
        annotation(1, square(h, w, 5, 6, 5, 6), score=0.69999),
    ]
    return predictions, previous


def test_the_merge_equals_the_published_script_ids_and_all():
    predictions, previous = merge_inputs()
    merged = self_training.self_training_file(copy.deepcopy(predictions), copy.deepcopy(previous), 0.7)
    images, annotations = published.self_training_annotations(copy.deepcopy(predictions), copy.deepcopy(previous), 0.7)
    assert merged["images"] == images and merged["annotations"] == annotations
    assert set(merged) == {"info", "licenses", "categories", "images", "annotations"}


def test_the_merge_keeps_predictions_and_the_masks_they_do_not_cover():
    predictions, previous = merge_inputs()
    merged = self_training.merge_annotations(predictions, previous, 0.7)
    # image 1: its prediction, then P1 (13); P0 (IoU 0.6) replaced, P2 (empty: IoU 0) kept;
    # image 2: its previous mask; image 4: its previous mask; image 3 (no previous masks) last.
    assert [(a["image_id"], a.get("score"), a["id"]) for a in merged] == [
        (1, 0.9, 1), (1, None, 2), (1, None, 3), (2, None, 4), (4, None, 5), (3, 0.7, 6)
    ]  # fmt: skip
    assert [
        a.get("segmentation") == previous["annotations"][i]["segmentation"] for a, i in ((merged[1], 2), (merged[2], 3))
    ]
    assert (merged[0]["area"], merged[0]["width"], merged[0]["height"], merged[0]["iscrowd"]) == (100.0, 10, 20, 0)


def test_mask_iou_of_two_empty_masks_is_nan_and_drops_the_previous_mask():
    empty = np.zeros((1, 4, 4), bool)
    assert np.isnan(self_training.mask_ious(empty, empty)[0, 0])
    assert self_training.previous_masks_kept(empty, empty).tolist() == []
