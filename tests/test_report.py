"""report.py: the numbers of the page worked out by hand on planted boxes, its links, the
comparison, the command line, and a real browser rendering it.

The planted run (images 100 x 100, so a box of area A takes A / 100 % of the image):

    name  gt boxes (class)                                   predicted box      verdict
    i1    [10,10,60,60] cat                                  [10,10,60,60]      hit (IoU 1)
    i2    [0,0,100,100] dog                                  [0,0,50,50]        miss, part (inside, IoU .25)
    i3    [0,0,20,20] cat, [50,50,100,100] dog               [50,50,100,100]    hit (IoU 1 with the dog)
    i4    [40,40,50,50] car                                  [0,0,100,100]      miss, too big (IoU .01)
    i5    [0,0,40,40] car, [60,60,100,100] car               [30,30,70,70]      miss, weak (IoU 100/3100)
    i6    [0,0,30,30] cat, [70,0,100,30] dog, [0,70,30,100] car  [40,40,60,60]  miss, no object
    i7    [0,0,30,30] cat                                    none               skipped

Headline: 2 hits of 6 evaluated = 33.3 %, 1 skipped (2 of 7 = 28.6 % counting it as a miss).
Per class (an image once per class it holds): cat i1 i3 i6 = 2/3, dog i2 i3 i6 = 1/3,
car i4 i5 i6 = 0/3. Largest box share: i1 25% medium, i2 100% large, i3 25% medium, i4 1% small,
i5 16% medium, i6 9% small -> small 0/2, medium 2/3, large 0/1. Objects: 1 (i1 i2 i4) 1/3,
2 (i3 i5) 1/2, 3-5 (i6) 0/1, 6+ none.
"""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_datasets import make_voc_tree, write_jpeg

import report as report_script
from lost.backbones import BackboneSpec
from lost.data import datasets
from lost.errors import LostError
from lost.eval import metrics
from lost.io import safe_files
from lost.methods import LostParams
from lost.report import pages, plots, runs
from lost.report import stats as report_stats
from lost.report.stats import ReportImage, ReportRun, RunInfo
from lost.run_spec import RunSpec

SIZE = (100, 100)
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def boxes(*rows: list[int]) -> np.ndarray:
    return np.array(rows, dtype=np.int64).reshape(-1, 4)


PLANTED = [
    ("i1", boxes([10, 10, 60, 60]), ("cat",), [10, 10, 60, 60]),
    ("i2", boxes([0, 0, 100, 100]), ("dog",), [0, 0, 50, 50]),
    ("i3", boxes([0, 0, 20, 20], [50, 50, 100, 100]), ("cat", "dog"), [50, 50, 100, 100]),
    ("i4", boxes([40, 40, 50, 50]), ("car",), [0, 0, 100, 100]),
    ("i5", boxes([0, 0, 40, 40], [60, 60, 100, 100]), ("car", "car"), [30, 30, 70, 70]),
    ("i6", boxes([0, 0, 30, 30], [70, 0, 100, 30], [0, 70, 30, 100]), ("cat", "dog", "car"), [40, 40, 60, 60]),
    ("i7", boxes([0, 0, 30, 30]), ("cat",), None),
]


def planted_images(folder: Path | None = None) -> tuple[ReportImage, ...]:
    """The planted run's images; with `folder`, each also written there as a 100 x 100 JPEG."""
    images = []
    for name, gt, labels, pred in PLANTED:
        path = None
        if folder is not None:
            path = folder / f"{name}.jpg"
            write_jpeg(path, gt.tolist(), size=SIZE)
        pred_box = None if pred is None else np.array(pred)
        images.append(ReportImage(name, path, pred_box, gt, labels, SIZE))
    return tuple(images)


def planted_run(folder: Path | None = None) -> ReportRun:
    info = RunInfo(source="planted.pkl", method="LOST", backbone="vit_small/16", weights="dino", dataset="planted")
    return ReportRun(info, planted_images(folder))


class PageParser(HTMLParser):
    """Tables (id -> rows of cell texts), links (href / src values), ids and text of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.links: list[str] = []
        self.ids: set[str] = set()
        self.text: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if values.get("id"):
            self.ids.add(values["id"])
        self.links += [value for key, value in attrs if key in ("href", "src") and value is not None]
        if tag == "table":
            self._table = values.get("id")
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def parse_page(path: Path) -> PageParser:
    parser = PageParser()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


# ----------------------------------------------------------------------------------------------
# Numbers


def test_headline_corloc_counts_hits_over_evaluated_images_and_skips_apart():
    stats = report_stats.accumulate(planted_run(), report_stats.evaluate_run(planted_run()))
    headline = stats.headline
    assert (headline.hits, headline.evaluated, headline.skipped) == (2, 6, 1)
    assert headline.corloc == pytest.approx(100 * 2 / 6)
    assert headline.corloc_skipped_as_misses == pytest.approx(100 * 2 / 7)


def test_headline_corloc_equals_the_projects_corloc_on_the_evaluated_images():
    run = planted_run()
    records = [datasets.ImageRecord(image.name, Path(image.name), image.gt_boxes) for image in run.images]
    predictions = {image.name: image.pred_box for image in run.images if image.pred_box is not None}
    evaluated = [record for record in records if record.name in predictions]
    stats = report_stats.accumulate(run, report_stats.evaluate_run(run))
    assert stats.headline.corloc == pytest.approx(metrics.evaluate_corloc(evaluated, predictions).value)


def test_image_counts_once_for_each_class_it_holds_sorted_by_corloc():
    stats = report_stats.accumulate(planted_run(), report_stats.evaluate_run(planted_run()))
    assert [(g.label, g.hits, g.count) for g in stats.by_class] == [("cat", 2, 3), ("dog", 1, 3), ("car", 0, 3)]


def test_corloc_by_largest_object_share_and_by_object_count():
    stats = report_stats.accumulate(planted_run(), report_stats.evaluate_run(planted_run()))
    assert [(g.label, g.hits, g.count) for g in stats.by_area] == [("small", 0, 2), ("medium", 2, 3), ("large", 0, 1)]
    assert [(g.label, g.hits, g.count) for g in stats.by_count] == [
        ("1", 1, 3),
        ("2", 1, 2),
        ("3-5", 0, 1),
        ("6+", 0, 0),
    ]


def test_one_miss_of_each_kind_and_shares_of_image_area():
    verdicts = {v.name: v for v in report_stats.evaluate_run(planted_run())}
    assert {name: v.miss_kind for name, v in verdicts.items()} == {
        "i1": None,
        "i2": "part",
        "i3": None,
        "i4": "too_big",
        "i5": "weak_overlap",
        "i6": "no_object",
    }
    assert verdicts["i5"].best_iou == pytest.approx(100 / 3100)
    assert verdicts["i4"].pred_share == 1.0
    assert verdicts["i5"].largest_share == pytest.approx(0.16)
    assert verdicts["i6"].largest_share == pytest.approx(0.09)


def test_area_and_count_bins_at_their_edges():
    assert [report_stats.area_bin(share) for share in (0.0, 0.0999, 0.1, 0.3999, 0.4, 1.0)] == [
        "small",
        "small",
        "medium",
        "medium",
        "large",
        "large",
    ]
    assert [report_stats.count_bin(n) for n in (0, 1, 2, 3, 5, 6, 40)] == ["0", "1", "2", "3-5", "3-5", "6+", "6+"]


def test_zero_object_row_appears_only_for_images_without_boxes():
    run = planted_run()
    empty = ReportImage("e", None, np.array([0, 0, 10, 10]), boxes(), (), SIZE)
    with_empty = ReportRun(run.info, (*run.images, empty))
    by_count = report_stats.corloc_by_object_count(report_stats.evaluate_run(with_empty))
    assert (by_count[0].label, by_count[0].hits, by_count[0].count) == ("0", 0, 1)
    assert report_stats.evaluate_run(with_empty)[-1].miss_kind == "no_object"
    assert "0" not in [g.label for g in report_stats.corloc_by_object_count(report_stats.evaluate_run(run))]


# ----------------------------------------------------------------------------------------------
# Miss kinds on planted boxes: gt [20,20,60,60] (area 1600) unless said otherwise.

GT = [[20, 20, 60, 60]]


@pytest.mark.parametrize(
    ("pred", "gt", "kind"),
    [
        # IoU 800/1600 = 0.5 exactly: a hit.
        ([20, 20, 60, 40], GT, None),
        # whole image: contains the gt, IoU 1600/10000.
        ([0, 0, 100, 100], GT, "too_big"),
        # 38 x 40 = 1520 of 1600 (95%) inside: contains within the tolerance; IoU 1520/7880.
        ([22, 0, 100, 100], GT, "too_big"),
        # 30 x 40 = 1200 of 1600 (75%) inside: not contained; IoU 1200/7400: weak.
        ([30, 0, 100, 100], GT, "weak_overlap"),
        # inside the gt, IoU 400/1600.
        ([25, 25, 45, 45], GT, "part"),
        # 500 of its 540 (92.6%) inside the gt: a part within the tolerance; IoU 500/1640.
        ([18, 25, 45, 45], GT, "part"),
        # 500 of its 600 (83.3%) inside: not a part; IoU 500/1700: weak.
        ([15, 25, 45, 45], GT, "weak_overlap"),
        # 10 x 10 overlap, IoU 100/3100.
        ([50, 50, 90, 90], GT, "weak_overlap"),
        # disjoint.
        ([70, 70, 90, 90], GT, "no_object"),
        # shares the edge x = 60, which is exclusive: no overlap.
        ([60, 20, 80, 60], GT, "no_object"),
        # no ground truth at all.
        ([0, 0, 10, 10], [], "no_object"),
        # an empty box inside the gt is neither a part nor an overlap.
        ([30, 30, 30, 50], GT, "no_object"),
        # precedence: contains [40,40,50,50] (IoU 100/900) and lies inside [0,0,100,100]
        # (IoU 900/10000): too big wins over a part.
        ([30, 30, 60, 60], [[40, 40, 50, 50], [0, 0, 100, 100]], "too_big"),
        # precedence: inside [0,0,50,50] (IoU 225/2500) and overlapping [40,40,100,100] by 5 x 5:
        # a part wins over weak overlap.
        ([30, 30, 45, 45], [[0, 0, 50, 50], [40, 40, 100, 100]], "part"),
        # precedence: contains [0,0,10,10] (IoU 100/1600) and overlaps [35,35,80,80] by 5 x 5:
        # too big wins over weak overlap.
        ([0, 0, 40, 40], [[0, 0, 10, 10], [35, 35, 80, 80]], "too_big"),
        # a hit on one box wins over containing another.
        ([0, 0, 50, 50], [[0, 0, 50, 40], [5, 5, 10, 10]], None),
    ],
)
def test_miss_kind_on_planted_boxes(pred, gt, kind):
    assert report_stats.miss_kind(np.array(pred), boxes(*gt)) == kind


def test_miss_kinds_partition_the_misses():
    rng = np.random.default_rng(0)
    for _ in range(300):
        corners = np.sort(rng.integers(0, 100, size=(3, 2, 2)), axis=1)
        pred, gt = corners[0].reshape(4), corners[1:].reshape(2, 4)  # [[x1, y1], [x2, y2]] -> [x1, y1, x2, y2]
        kind = report_stats.miss_kind(pred, gt)
        hit = metrics.is_correct_localization(pred, gt)
        assert (kind is None) == hit
        assert kind is None or kind in report_stats.MISS_KINDS


# ----------------------------------------------------------------------------------------------
# Gallery


def test_split_quota_shares_places_round_robin_up_to_what_each_group_holds():
    assert report_stats.split_quota(60, [100] * 5) == [12] * 5
    assert report_stats.split_quota(60, [3, 100, 0, 5, 100]) == [3, 26, 0, 5, 26]
    assert report_stats.split_quota(60, [1, 2]) == [1, 2]
    assert report_stats.split_quota(0, [4, 4]) == [0, 0]


def many_images(count: int, seed: int = 0) -> tuple[ReportImage, ...]:
    """`count` 100 x 100 images with one gt box [20,20,60,60] and a random predicted box."""
    rng = np.random.default_rng(seed)
    images = []
    for index in range(count):
        x1, y1 = rng.integers(0, 60, size=2)
        w, h = rng.integers(5, 40, size=2)
        pred = np.array([x1, y1, x1 + w, y1 + h])
        images.append(ReportImage(f"m{index}", None, pred, boxes([20, 20, 60, 60]), ("thing",), SIZE))
    return tuple(images)


def test_gallery_is_a_capped_fixed_seed_sample_and_only_sampled_images_get_thumbnails(tmp_path):
    run = ReportRun(RunInfo("many.pkl"), many_images(300))
    verdicts = report_stats.evaluate_run(run)
    first = report_stats.sample_gallery(verdicts, 20, seed=3)
    assert first == report_stats.sample_gallery(verdicts, 20, seed=3)
    assert first != report_stats.sample_gallery(verdicts, 20, seed=4)
    assert sum(len(members) for members in first.values()) == 20
    assert all(verdict.group == group for group, members in first.items() for verdict in members)
    pages.build_report(run, tmp_path, gallery_size=20, seed=3)
    thumbnails = sorted(path.name for path in (tmp_path / "report" / "gallery").iterdir())
    expected = sorted(f"{v.group}_{v.index:06d}.jpg" for members in first.values() for v in members)
    assert thumbnails == expected


def test_rebuilding_removes_thumbnails_of_an_earlier_sample(tmp_path):
    run = ReportRun(RunInfo("many.pkl"), many_images(100))
    pages.build_report(run, tmp_path, gallery_size=30, seed=0)
    pages.build_report(run, tmp_path, gallery_size=5, seed=1)
    assert len(list((tmp_path / "report" / "gallery").iterdir())) == 5


def test_thumbnail_of_a_small_image_is_scaled_up_before_drawing():
    # 100 x 100 grey canvas (no file) to 200 x 200: [10, 10, 60, 60] is drawn at [20, 20, 120, 120].
    picture = plots.thumbnail(None, SIZE, [(np.array([10, 10, 60, 60]), (255, 0, 0), 2)], 200)
    pixels = np.asarray(picture).astype(int)
    assert picture.size == (200, 200)
    assert tuple(pixels[20, 60]) == (255, 0, 0) and tuple(pixels[119, 60]) == (255, 0, 0)
    assert tuple(pixels[18, 60]) == (128, 128, 128) and tuple(pixels[22, 60]) == (128, 128, 128)


def test_thumbnail_scales_boxes_to_the_picture(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (400, 300), (20, 20, 30)).save(path, quality=95)
    picture = plots.thumbnail(path, (300, 400), [(np.array([100, 100, 200, 200]), (255, 0, 0), 2)], 200)
    pixels = np.asarray(picture).astype(int)
    assert picture.size == (200, 150)
    assert pixels[50, 75, 0] > 200 and pixels[50, 75, 1] < 60  # top edge of [50, 50, 100, 100]
    assert pixels[75, 75, 0] < 60  # inside, not drawn


# ----------------------------------------------------------------------------------------------
# The page


@pytest.fixture
def planted_report(tmp_path: Path) -> Path:
    """The planted run's report (with JPEGs) and a comparison, in tmp_path/out."""
    images_dir = tmp_path / "images"
    run = planted_run(images_dir)
    other = ReportRun(RunInfo("other.pkl"), tuple(_with_gt_as_prediction(image) for image in run.images))
    out = tmp_path / "out"
    pages.build_comparison(run, other, out)
    pages.build_report(run, out, links=(("compare.html", "Comparison"),))
    return out


def _with_gt_as_prediction(image: ReportImage) -> ReportImage:
    return ReportImage(image.name, image.path, image.gt_boxes[0], image.gt_boxes, image.gt_labels, image.image_size)


def test_page_tables_hold_the_hand_counts(planted_report):
    page = parse_page(planted_report / "report.html")
    assert page.tables["per-class-table"][1:] == [
        ["cat", "3", "2", "66.7"],
        ["dog", "3", "1", "33.3"],
        ["car", "3", "0", "0.0"],
    ]
    assert page.tables["area-table"][1:] == [
        ["small (< 10%)", "2", "0", "0.0"],
        ["medium (10% to < 40%)", "3", "2", "66.7"],
        ["large (>= 40%)", "1", "0", "0.0"],
    ]
    assert page.tables["count-table"][1:] == [
        ["1", "3", "1", "33.3"],
        ["2", "2", "1", "50.0"],
        ["3-5", "1", "0", "0.0"],
        ["6+", "0", "0", "-"],
    ]
    kinds = [(row[0], row[2], row[3], row[4]) for row in page.tables["miss-table"][1:]]
    assert kinds == [
        ("Too big", "1", "25.0", "16.7"),
        ("A part", "1", "25.0", "16.7"),
        ("Weak overlap", "1", "25.0", "16.7"),
        ("No object", "1", "25.0", "16.7"),
    ]
    headline = dict(row for row in page.tables["headline"])
    assert headline["CorLoc (%)"].startswith("33.3")
    assert headline["Evaluated images"] == "6"
    assert headline["Skipped images (no box)"] == "1"
    assert headline["CorLoc (%), skipped counted as misses"] == "28.6"
    assert headline["Run time"] == "not recorded"


def test_every_link_of_both_pages_resolves(planted_report):
    for name in ("report.html", "compare.html"):
        page = parse_page(planted_report / name)
        assert page.links
        for link in page.links:
            assert "://" not in link and not link.startswith("/"), link
            if link.startswith("#"):
                assert link[1:] in page.ids, link
            else:
                assert (planted_report / link).is_file(), link
    sources = [link for link in parse_page(planted_report / "report.html").links if link.endswith(".jpg")]
    assert len(sources) == 6  # every evaluated image fits in the default gallery


def test_page_has_no_script_and_no_external_resource(planted_report):
    text = (planted_report / "report.html").read_text(encoding="utf-8")
    assert "<script" not in text
    assert "http" not in text


def test_html_escapes_image_and_class_names(tmp_path):
    image = ReportImage('<b>"x"</b>', None, np.array([0, 0, 10, 10]), boxes([0, 0, 10, 10]), ("<i>cat</i>",), SIZE)
    pages.build_report(ReportRun(RunInfo("<run>.pkl"), (image,)), tmp_path)
    text = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<b>" not in text and "<i>" not in text and "&lt;i&gt;cat&lt;/i&gt;" in text


# ----------------------------------------------------------------------------------------------
# Compare


def hand_run(source: str, preds: dict[str, list[int] | None]) -> ReportRun:
    """Four 100 x 100 images, gt [0,0,50,50]; a: cat, b: cat+dog, c: dog, d: dog."""
    labels = {"a": ("cat",), "b": ("cat", "dog"), "c": ("dog",), "d": ("dog",)}
    images = tuple(
        ReportImage(name, None, None if pred is None else np.array(pred), boxes([0, 0, 50, 50]), labels[name], SIZE)
        for name, pred in preds.items()
    )
    return ReportRun(RunInfo(source), images)


HIT, MISS = [0, 0, 50, 50], [60, 60, 90, 90]


def test_comparison_counts_on_hand_built_runs():
    # A hits a, b; B skips a, hits b and c; nobody hits d.
    run_a = hand_run("a.pkl", {"a": HIT, "b": HIT, "c": MISS, "d": MISS})
    run_b = hand_run("b.pkl", {"a": None, "b": HIT, "c": HIT, "d": MISS})
    comparison = report_stats.compare_runs(run_a, run_b)
    assert (comparison.both, comparison.only_a, comparison.only_b, comparison.neither) == (1, (0,), (2,), 1)
    assert (comparison.headline_a.hits, comparison.headline_b.hits, comparison.headline_a.evaluated) == (2, 2, 4)
    # cat: a, b -> A 2/2, B 1/2 (skipped a is a miss). dog: b, c, d -> A 1/3, B 2/3. B - A: dog first.
    rows = [(row.label, row.a.hits, row.a.count, row.b.hits, row.b.count) for row in comparison.by_class]
    assert rows == [("dog", 1, 3, 2, 3), ("cat", 2, 2, 1, 2)]


def test_comparison_page_tables_and_disagreement_thumbnails(tmp_path):
    run_a = hand_run("a.pkl", {"a": HIT, "b": HIT, "c": MISS, "d": MISS})
    run_b = hand_run("b.pkl", {"a": None, "b": HIT, "c": HIT, "d": MISS})
    pages.build_comparison(run_a, run_b, tmp_path)
    page = parse_page(tmp_path / "compare.html")
    assert page.tables["agreement"][1:] == [
        ["both right", "1", "25.0"],
        ["only A right", "1", "25.0"],
        ["only B right", "1", "25.0"],
        ["both wrong", "1", "25.0"],
    ]
    assert page.tables["compare-per-class"][1:] == [
        ["dog", "3", "1", "33.3", "2", "66.7", "+33.3"],
        ["cat", "2", "2", "100.0", "1", "50.0", "-50.0"],
    ]
    assert sorted(path.name for path in (tmp_path / "report" / "compare").glob("*.jpg")) == [
        "only_a_000000.jpg",
        "only_b_000002.jpg",
    ]


def test_comparison_uses_the_images_both_runs_hold():
    run_a = hand_run("a.pkl", {"a": HIT, "b": HIT, "c": MISS, "d": MISS})
    run_b = hand_run("b.pkl", {"c": HIT, "d": MISS})
    comparison = report_stats.compare_runs(run_a, run_b)
    assert (comparison.headline_a.evaluated, comparison.only_b, comparison.both) == (2, (2,), 0)


def test_comparison_of_runs_without_common_images_is_a_lost_error():
    with pytest.raises(LostError, match="no image in common"):
        report_stats.compare_runs(hand_run("a.pkl", {"a": HIT}), hand_run("b.pkl", {"b": HIT}))


# ----------------------------------------------------------------------------------------------
# From records and files; the command line.
# Tiny VOC (64 x 48): 000001 [8,8,40,32]; 000002 [0,0,64,48] (truncated), [32,16,56,40];
# 000003 [4,4,20,20] (difficult); 000004 [11,7,44,40].

# 000001 exact: hit. 000002 [0,0,16,16] lies inside [0,0,64,48]: a part (IoU 256/3072).
# 000003 absent: skipped. 000004 whole image contains [11,7,44,40] (IoU 1089/3072): too big.
VOC_PREDS = {"000001.jpg": [8, 8, 40, 32], "000002.jpg": [0, 0, 16, 16], "000004.jpg": [0, 0, 64, 48]}


@pytest.fixture
def voc_root(tmp_path: Path) -> Path:
    make_voc_tree(tmp_path / "data")
    return tmp_path / "data"


def write_preds(folder: Path, preds: dict[str, list[int]]) -> Path:
    safe_files.write_predictions(folder, {name: np.array(box) for name, box in preds.items()})
    return folder / "preds.pkl"


def test_report_images_take_sizes_from_headers_and_label_boxes(voc_root, tmp_path):
    spec = datasets.load_dataset("VOC07", "trainval", voc_root, no_hard=False)
    no_gt = datasets.ImageRecord("free.jpg", tmp_path / "free.jpg", None)
    labelled = datasets.ImageRecord("l.jpg", spec.records[0].path, spec.records[0].gt_boxes, ("dog",))
    unlabelled = datasets.ImageRecord("u.jpg", spec.records[0].path, spec.records[0].gt_boxes, None)
    predictions = {name: np.array(box) for name, box in VOC_PREDS.items()}
    extra = {"l.jpg": np.array([0, 0, 1, 1]), "u.jpg": np.array([0, 0, 1, 1])}
    images = runs.report_images([*spec.records, no_gt, labelled, unlabelled], {**predictions, **extra})
    assert [image.name for image in images] == ["000001.jpg", "000002.jpg", "000003.jpg", "000004.jpg", "l.jpg", "u.jpg"]
    assert all(image.image_size == (48, 64) for image in images)
    assert images[1].gt_labels == spec.records[1].gt_labels and len(images[1].gt_labels) == 2
    assert images[2].pred_box is None
    assert images[4].gt_labels == ("dog",)
    assert images[5].gt_labels == (runs.UNLABELLED,) * len(spec.records[0].gt_boxes)


def test_with_predictions_swaps_boxes_and_reads_only_unknown_sizes(tmp_path):
    path = tmp_path / "wide.jpg"
    Image.new("RGB", (80, 30)).save(path)
    known = ReportImage("k", tmp_path / "absent.jpg", None, boxes([0, 0, 5, 5]), ("cat",), (10, 20), np.zeros(4))
    unknown = ReportImage("u", path, None, boxes([0, 0, 5, 5]), ("cat",), (0, 0))
    swapped = runs.with_predictions([known, unknown], {"k": np.array([1, 1, 4, 4]), "u": np.array([0, 0, 5, 5])})
    assert [image.pred_box.tolist() for image in swapped] == [[1, 1, 4, 4], [0, 0, 5, 5]]
    assert [image.image_size for image in swapped] == [(10, 20), (30, 80)]  # the absent file is never opened
    assert swapped[0].seed_box is None  # a seed belongs to the run that found it
    assert runs.with_predictions([unknown], {})[0].image_size == (0, 0)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = report_script.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_report_and_comparison_on_tiny_voc(voc_root, tmp_path, capsys):
    pred_file = write_preds(tmp_path / "run", VOC_PREDS)
    other = write_preds(tmp_path / "other", {name: box for name, box in _voc_gt_first_boxes(voc_root).items()})
    out = tmp_path / "out"
    code, stdout, err = run_cli(
        capsys,
        "--pred_file",
        str(pred_file),
        "--dataset",
        "VOC07",
        "--set",
        "trainval",
        "--datasets_root",
        str(voc_root),
        "--compare",
        str(other),
        "--output",
        str(out),
    )
    assert (code, err) == (0, "")
    assert "corloc: 33.3 (1/3), 1 skipped" in stdout
    page = parse_page(out / "report.html")
    headline = dict(row for row in page.tables["headline"])
    assert headline["CorLoc (%)"].startswith("33.3")
    assert headline["CorLoc (%), skipped counted as misses"] == "25.0"  # main_corloc_evaluation's number
    assert headline["Data set"] == "VOC07_trainval"
    kinds = {row[0]: row[2] for row in page.tables["miss-table"][1:]}
    assert kinds == {"Too big": "1", "A part": "1", "Weak overlap": "0", "No object": "0"}
    assert "compare.html" in page.links
    agreement = parse_page(out / "compare.html").tables["agreement"][1:]
    # 000001 both; 000002, 000004 only B; 000003 skipped by A, hit by B.
    assert [row[1] for row in agreement] == ["1", "0", "3", "0"]


def _voc_gt_first_boxes(voc_root: Path) -> dict[str, list[int]]:
    spec = datasets.load_dataset("VOC07", "trainval", voc_root, no_hard=False)
    return {record.name: record.gt_boxes[0].tolist() for record in spec.records}


def test_cli_output_defaults_to_the_prediction_files_folder_and_reads_the_journal(voc_root, tmp_path, capsys):
    pred_file = write_preds(tmp_path / "run", VOC_PREDS)
    settings = RunSpec("VOC07_trainval", BackboneSpec(), "lost", LostParams()).settings()
    (tmp_path / "run" / "journal.jsonl").write_text(json.dumps({"run": settings}) + "\n")
    code, _, _ = run_cli(capsys, "--pred_file", str(pred_file), "--set", "trainval", "--datasets_root", str(voc_root))
    assert code == 0
    headline = dict(row for row in parse_page(tmp_path / "run" / "report.html").tables["headline"])
    assert headline["Method"] == "LOST (k_patches = 100)"
    assert headline["Backbone"] == "vit_small16, fp32"
    assert headline["Weights"] == "published (default download)"


def test_cli_reads_a_detectron_results_file(voc_root, tmp_path, capsys):
    detections = [
        {"image_id": "000001", "category_id": 1, "bbox": [8, 8, 32, 24], "score": 0.9},
        {"image_id": "000004", "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.8},
    ]
    pred_file = tmp_path / "coco_instances_results.json"
    pred_file.write_text(json.dumps(detections))
    code, stdout, _ = run_cli(
        capsys,
        "--pred_file",
        str(pred_file),
        "--set",
        "trainval",
        "--datasets_root",
        str(voc_root),
        "--output",
        str(tmp_path / "out"),
    )
    assert code == 0
    assert "corloc: 50.0 (1/2), 2 skipped" in stdout


@pytest.mark.parametrize("name", ["preds.pkl", "preds.json"])
def test_cli_reads_the_top_box_of_multi_box_predictions(voc_root, tmp_path, capsys, name):
    # the top boxes are VOC_PREDS' (1 hit of 3); the second boxes would hit 000002 and 000004
    scored = {
        image: safe_files.ScoredBoxes(np.array([box, second]), np.array([0.9, 0.1]))
        for (image, box), second in zip(VOC_PREDS.items(), ([0, 0, 4, 4], [32, 16, 56, 40], [11, 7, 44, 40]), strict=True)
    }
    safe_files.write_scored_predictions(tmp_path / "run", scored)
    code, stdout, _ = run_cli(capsys, "--pred_file", str(tmp_path / "run" / name), "--set", "trainval",
                              "--datasets_root", str(voc_root), "--output", str(tmp_path / "out"))
    assert code == 0
    assert "corloc: 33.3 (1/3), 1 skipped" in stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--pred_file", "{tmp}/absent.pkl"], "prediction file not found"),
        (["--pred_file", "{tmp}/other.pkl"], "no prediction for any of the 4 images"),
        (["--pred_file", "{tmp}/run/preds.pkl", "--gallery_size", "-1"], "--gallery_size -1"),
        (["--pred_file", "{tmp}/run/preds.pkl", "--compare", "{tmp}/absent.pkl"], "prediction file not found"),
        (["--pred_file", "{tmp}/run/preds.pkl", "--output", "{tmp}/file.txt/out"], "--output"),
    ],
)
def test_cli_user_errors_are_one_line_and_exit_2(voc_root, tmp_path, capsys, argv, message):
    write_preds(tmp_path / "run", VOC_PREDS)
    (tmp_path / "other.pkl").write_bytes(pickle.dumps({"elsewhere.jpg": np.zeros(4)}))
    (tmp_path / "file.txt").write_text("not a folder")
    filled = [value.format(tmp=tmp_path) for value in argv]
    code, _, err = run_cli(capsys, *filled, "--set", "trainval", "--datasets_root", str(voc_root))
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1
    assert message in err


# ----------------------------------------------------------------------------------------------
# A real browser


def find_browser() -> str | None:
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


@pytest.mark.skipif(find_browser() is None, reason="no chromium, chromium-browser or google-chrome on PATH")
def test_headless_browser_renders_the_report(planted_report, tmp_path):
    browser = find_browser()
    url = (planted_report / "report.html").resolve().as_uri()
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,2000"]
    screenshot = tmp_path / "shot.png"
    subprocess.run([*flags, f"--screenshot={screenshot}", url], check=True, capture_output=True, timeout=120)
    dom = subprocess.run([*flags, "--dump-dom", url], check=True, capture_output=True, text=True, timeout=120).stdout
    pixels = np.asarray(Image.open(screenshot).convert("L"), dtype=np.float64)
    assert pixels.shape == (2000, 1200)
    assert pixels.std() > 20  # a blank page is one colour
    assert (pixels < 128).mean() > 0.01  # text and plots, not a white sheet
    assert '<span class="big" id="corloc">33.3</span>' in dom
    assert "CorLoc per class" in dom
