"""The pages of a run report: ``report.html`` for one run, ``compare.html`` for two side by side.

:func:`build_report` and :func:`build_comparison` run the whole of it: the numbers of
:mod:`lost.report.stats` (evaluate, accumulate, sample), then the page, with the plots and
thumbnails drawn by :mod:`lost.report.plots` from plain numbers and boxes. A page is one static
HTML file with inline CSS and no script, linking PNG plots and JPEG thumbnails under
``<output>/report/``; it needs no network.

Boxes are ``[x1, y1, x2, y2]`` in pixels of the original image, x2/y2 exclusive, throughout.
"""

from __future__ import annotations

import html
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from lost.errors import LostError
from lost.eval.metrics import box_iou
from lost.io.safe_files import atomic_write
from lost.report import plots as report_plots
from lost.report.stats import (
    AREA_BINS,
    CONTAINMENT,
    DEFAULT_GALLERY_SIZE,
    GALLERY_GROUPS,
    Comparison,
    GroupCorLoc,
    Headline,
    ImageEvaluation,
    ReportImage,
    ReportRun,
    ReportStats,
    accumulate,
    compare_runs,
    evaluate_run,
    sample_gallery,
    sample_groups,
)
from lost.viz.pictures import BOX_COLOR, SEED_COLOR

GT_COLOUR = (40, 200, 70)
PRED_COLOUR = BOX_COLOR
OTHER_PRED_COLOUR = (40, 120, 255)
SEED_COLOUR = SEED_COLOR
THUMB_SIDE = 200
GT_LINE, BOX_LINE = 4, 2
"""Outline widths in thumbnail pixels: a box drawn over an equal, wider one leaves a band of the
first colour (gt under the prediction; in a comparison, A's box one pixel wider under B's)."""

GROUP_TITLES = {
    "hit": "Hits",
    "too_big": "Too big",
    "part": "A part",
    "weak_overlap": "Weak overlap",
    "no_object": "No object",
}
MISS_KIND_RULES = {
    "too_big": f"the box contains a ground-truth box (at least {CONTAINMENT:.0%} of that box's area lies inside it)",
    "part": f"not too big, and at least {CONTAINMENT:.0%} of the box's area lies inside one ground-truth box",
    "weak_overlap": "neither of the above, and IoU between 0 and 0.5 with some ground-truth box",
    "no_object": "IoU 0 with every ground-truth box (or the image has none)",
}

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #222;
       max-width: 1120px; margin: 24px auto; padding: 0 16px; line-height: 1.4; }
h1 { font-size: 1.5em; margin-bottom: 0.3em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
nav a { margin-right: 1em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 3px 9px; text-align: left; }
th { background: #f2f2f2; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
table.headline th { width: 17em; } .big { font-size: 1.6em; font-weight: bold; }
img.plot { max-width: 100%; display: block; margin: 0.5em 0; }
.gallery { display: flex; flex-wrap: wrap; gap: 10px; }
figure { margin: 0; width: 210px; font-size: 0.78em; overflow-wrap: anywhere; }
figure img { display: block; border: 1px solid #bbb; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; vertical-align: middle; margin: 0 4px 0 10px; }
p.rule { color: #444; max-width: 62em; }
.row { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
"""


def _escape(value: object) -> str:
    return html.escape(str(value), quote=True)


def _page(title: str, body: Sequence[str]) -> str:
    """A whole HTML document: inline CSS, no script."""
    head = f'<meta charset="utf-8"><title>{_escape(title)}</title><style>{CSS}</style>'
    return f'<!DOCTYPE html>\n<html lang="en"><head>{head}</head>\n<body>\n' + "\n".join(body) + "\n</body></html>\n"


def _table(table_id: str, headers: Sequence[str], rows: Sequence[Sequence[object]], numeric_from: int = 1) -> str:
    """An HTML table with id `table_id`; cells from column `numeric_from` on are right-aligned."""
    head = "".join(f"<th>{_escape(header)}</th>" for header in headers)
    lines = [f'<table id="{table_id}"><tr>{head}</tr>']
    for row in rows:
        cells = "".join(
            f'<td class="n">{_escape(cell)}</td>' if column >= numeric_from else f"<td>{_escape(cell)}</td>"
            for column, cell in enumerate(row)
        )
        lines.append(f"<tr>{cells}</tr>")
    lines.append("</table>")
    return "\n".join(lines)


def _share(count: int, total: int) -> str:
    """count / total as a percentage with one decimal, "-" when total is 0."""
    return f"{100.0 * count / total:.1f}" if total else "-"


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{seconds:.0f} s ({hours} h {minutes:02d} min)"
    return f"{seconds:.0f} s ({minutes} min {rest:02d} s)" if minutes else f"{seconds:.1f} s"


def _or_not_recorded(value: object | None) -> str:
    return "not recorded" if value is None else str(value)


def _swatch(colour: tuple[int, int, int], text: str) -> str:
    red, green, blue = colour
    return f'<span class="swatch" style="background: rgb({red}, {green}, {blue})"></span>{_escape(text)}'


def _headline_html(headline: Headline) -> str:
    info = headline.info
    rows = [
        ("Predictions", _escape(info.source)),
        ("Method", _escape(_or_not_recorded(info.method))),
        ("Backbone", _escape(_or_not_recorded(info.backbone))),
        ("Weights", _escape(_or_not_recorded(info.weights))),
        ("Data set", _escape(_or_not_recorded(info.dataset))),
        (
            "CorLoc (%)",
            f'<span class="big" id="corloc">{headline.corloc:.1f}</span> '
            f"({headline.hits} of {headline.evaluated} evaluated images)",
        ),
        ("Evaluated images", str(headline.evaluated)),
        ("Skipped images (no box)", str(headline.skipped)),
    ]
    if headline.skipped:
        rows.append(("CorLoc (%), skipped counted as misses", f"{headline.corloc_skipped_as_misses:.1f}"))
    rows.append(("Run time", "not recorded" if info.seconds is None else _duration(info.seconds)))
    rows.append(("Images/s", "not recorded" if info.images_per_second is None else f"{info.images_per_second:.2f}"))
    body = "".join(f"<tr><th>{name}</th><td>{value}</td></tr>" for name, value in rows)
    return f'<table id="headline" class="headline">{body}</table>'


def _group_rows(groups: Sequence[GroupCorLoc], title: Callable[[str], str] = str) -> list[tuple[str, int, int, str]]:
    return [
        (title(group.label), group.count, group.hits, f"{group.corloc:.1f}" if group.count else "-") for group in groups
    ]


def area_bin_range(label: str) -> str:
    """The AREA_BINS interval of `label` in words: "< 10%", "10% to < 40%", ">= 40%"."""
    low, high = next((low, high) for name, low, high in AREA_BINS if name == label)
    if low == 0:
        return f"< {high:.0%}"
    return f">= {low:.0%}" if high == float("inf") else f"{low:.0%} to < {high:.0%}"


def _area_title(label: str) -> str:
    return f"{label} ({area_bin_range(label)})"


def _write_report_plots(stats: ReportStats, assets: Path) -> None:
    """corloc_by_class.png, corloc_by_difficulty.png, miss_kinds.png, area_shares.png."""
    overall = stats.headline.corloc
    classes = stats.by_class
    report_plots.plot_corloc_bars(
        [group.label for group in classes],
        [group.corloc for group in classes],
        [group.count for group in classes],
        overall,
        assets / "corloc_by_class.png",
        "CorLoc per class (an image counts for each class it contains)",
    )
    panels = [
        (
            "by the largest object's share of the image",
            [f"{group.label}\n{area_bin_range(group.label)}" for group in stats.by_area],
            [group.corloc for group in stats.by_area],
            [group.count for group in stats.by_area],
        ),
        (
            "by the number of objects",
            [group.label for group in stats.by_count],
            [group.corloc for group in stats.by_count],
            [group.count for group in stats.by_count],
        ),
    ]
    report_plots.plot_binned_corloc(panels, overall, assets / "corloc_by_difficulty.png")
    report_plots.plot_counts(
        [GROUP_TITLES[kind] for kind, _ in stats.miss_counts],
        [count for _, count in stats.miss_counts],
        assets / "miss_kinds.png",
        f"The {stats.misses} misses by kind",
    )
    report_plots.plot_share_histograms(
        {"predicted box": stats.pred_shares, "largest ground-truth box": stats.largest_shares},
        assets / "area_shares.png",
        "Box area as a share of the image, evaluated images",
    )


def _thumbnail_figure(
    image: ReportImage, outlines: Sequence[report_plots.Outline], folder: Path, file_name: str, caption: str
) -> str:
    """Write one thumbnail into `folder` (under <output>/report/) and return its <figure>."""
    picture = report_plots.thumbnail(image.path, image.image_size, outlines, THUMB_SIDE)
    report_plots.save_jpeg(picture, folder / file_name)
    source = f"report/{folder.name}/{file_name}"
    return f'<figure><img src="{source}" alt="{_escape(image.name)}"><figcaption>{caption}</figcaption></figure>'


def _gt_outlines(image: ReportImage) -> list[report_plots.Outline]:
    return [(box, GT_COLOUR, GT_LINE) for box in np.asarray(image.gt_boxes).reshape(-1, 4)]


def _report_thumbnail(image: ReportImage, verdict: ImageEvaluation, folder: Path) -> str:
    boxes = _gt_outlines(image)
    if image.seed_box is not None:
        boxes.append((image.seed_box, SEED_COLOUR, BOX_LINE))
    boxes.append((image.pred_box, PRED_COLOUR, BOX_LINE))
    caption = f"{_escape(image.name)}<br>IoU {verdict.best_iou:.2f} &middot; {_escape(', '.join(verdict.classes))}"
    return _thumbnail_figure(image, boxes, folder, f"{verdict.group}_{verdict.index:06d}.jpg", caption)


def _gallery_html(
    run: ReportRun, stats: ReportStats, gallery: Mapping[str, Sequence[ImageEvaluation]], folder: Path
) -> str:
    totals = dict(stats.miss_counts, hit=stats.headline.hits)
    legend = " ".join(
        [
            _swatch(GT_COLOUR, "ground truth"),
            _swatch(PRED_COLOUR, "predicted box"),
            _swatch(SEED_COLOUR, "seed patch (LOST)"),
        ]
    )
    parts = [f"<p>{legend}</p>"]
    for group in GALLERY_GROUPS:
        sample = gallery.get(group, ())
        parts.append(f'<h3 id="gallery-{group}">{GROUP_TITLES[group]} ({len(sample)} of {totals[group]} shown)</h3>')
        figures = [_report_thumbnail(run.images[verdict.index], verdict, folder) for verdict in sample]
        parts.append(f'<div class="gallery">{"".join(figures)}</div>' if figures else "<p>None.</p>")
    return "\n".join(parts)


def write_report_page(
    run: ReportRun,
    stats: ReportStats,
    gallery: Mapping[str, Sequence[ImageEvaluation]],
    output_dir: Path,
    links: Sequence[tuple[str, str]] = (),
) -> Path:
    """Write `output_dir/report.html`, its plots under `output_dir/report/` and the thumbnails of
    `gallery` under `output_dir/report/gallery/` (which must exist); returns the page's path."""
    assets = output_dir / "report"
    _write_report_plots(stats, assets)
    headline = stats.headline
    evaluated = headline.evaluated
    nav_links = [
        ("#per-class", "Per class"),
        ("#difficulty", "Difficulty"),
        ("#misses", "Misses"),
        ("#gallery", "Gallery"),
    ]
    nav = " ".join(f'<a href="{_escape(href)}">{_escape(text)}</a>' for href, text in [*nav_links, *links])
    area_rule = ", ".join(_area_title(label) for label, _, _ in AREA_BINS)
    miss_rows = [
        (GROUP_TITLES[kind], MISS_KIND_RULES[kind], count, _share(count, stats.misses), _share(count, evaluated))
        for kind, count in stats.miss_counts
    ]
    title = f"CorLoc report: {run.info.method or run.info.source} on {run.info.dataset or 'unknown data set'}"
    body = [
        f"<h1>{_escape(title)}</h1>",
        f"<nav>{nav}</nav>",
        _headline_html(headline),
        '<p class="rule">An image is a hit when the predicted box has IoU &ge; 0.5 with any ground-truth box '
        "(CorLoc). CorLoc is over the evaluated images, those the run gave a box.</p>",
        '<h2 id="per-class">CorLoc per class</h2>',
        '<p class="rule">An image counts once for each class among its objects, and as a hit for all of them '
        "when it is a hit, whichever object the box matched; the class counts therefore add up to more "
        "than the number of images.</p>",
        '<div class="row"><img class="plot" src="report/corloc_by_class.png" alt="CorLoc per class">',
        _table("per-class-table", ["class", "images", "hits", "CorLoc (%)"], _group_rows(stats.by_class)),
        "</div>",
        '<h2 id="difficulty">CorLoc by difficulty</h2>',
        f'<p class="rule">Size: the area of the largest ground-truth box over the image area: {_escape(area_rule)}. '
        "Objects: the number of ground-truth boxes in the image (a row 0 appears only for images without any, "
        "which are always misses).</p>",
        '<img class="plot" src="report/corloc_by_difficulty.png" alt="CorLoc by difficulty">',
        '<div class="row">',
        _table(
            "area-table", ["largest object", "images", "hits", "CorLoc (%)"], _group_rows(stats.by_area, _area_title)
        ),
        _table("count-table", ["objects", "images", "hits", "CorLoc (%)"], _group_rows(stats.by_count)),
        "</div>",
        '<h2 id="misses">Misses</h2>',
        f'<p class="rule">Each of the {stats.misses} misses (IoU &lt; 0.5 with every ground-truth box) is of the '
        "first kind below that applies, in this order.</p>",
        _table("miss-table", ["kind", "rule", "images", "share of misses (%)", "share of evaluated (%)"], miss_rows, 2),
        '<div class="row"><img class="plot" src="report/miss_kinds.png" alt="Misses by kind">',
        '<img class="plot" src="report/area_shares.png" alt="Area shares of the boxes"></div>',
        '<h2 id="gallery">Gallery</h2>',
        f'<p class="rule">A fixed-seed sample of each group, {sum(map(len, gallery.values()))} images in all.</p>',
        _gallery_html(run, stats, gallery, assets / "gallery"),
    ]
    page = output_dir / "report.html"
    atomic_write(page, _page(title, body).encode("utf-8"))
    return page


def _best_iou(image: ReportImage, pred_box: np.ndarray | None) -> str:
    if pred_box is None:
        return "skipped"
    ious = box_iou(pred_box, np.asarray(image.gt_boxes).reshape(-1, 4))
    return f"{ious.max() if len(ious) else 0.0:.2f}"


def _comparison_thumbnail(image: ReportImage, other: ReportImage, group: str, index: int, folder: Path) -> str:
    runs = ((image.pred_box, PRED_COLOUR, BOX_LINE + 1), (other.pred_box, OTHER_PRED_COLOUR, BOX_LINE))
    boxes = _gt_outlines(image) + [(box, colour, width) for box, colour, width in runs if box is not None]
    caption = (
        f"{_escape(image.name)}<br>IoU A {_best_iou(image, image.pred_box)} &middot; "
        f"B {_best_iou(image, other.pred_box)}<br>{_escape(', '.join(sorted(set(image.gt_labels))))}"
    )
    return _thumbnail_figure(image, boxes, folder, f"{group}_{index:06d}.jpg", caption)


def write_comparison_page(
    run_a: ReportRun,
    run_b: ReportRun,
    comparison: Comparison,
    gallery: Mapping[str, Sequence[int]],
    output_dir: Path,
) -> Path:
    """Write `output_dir/compare.html`, its plot under `output_dir/report/compare/` (which must
    exist) with the thumbnails of `gallery` ("only_a" / "only_b" -> indices into run A's images);
    returns the page's path."""
    folder = output_dir / "report" / "compare"
    rows = comparison.by_class
    report_plots.plot_paired_corloc(
        [row.label for row in rows],
        [row.a.corloc for row in rows],
        [row.b.corloc for row in rows],
        ("A", "B"),
        (PRED_COLOUR, OTHER_PRED_COLOUR),
        folder / "corloc_by_class.png",
    )
    shared = comparison.headline_a.evaluated
    runs = [("A", run_a, comparison.headline_a, PRED_COLOUR), ("B", run_b, comparison.headline_b, OTHER_PRED_COLOUR)]
    run_rows = [
        (name, run.info.source, _or_not_recorded(run.info.method), headline.hits, f"{headline.corloc:.1f}")
        for name, run, headline, _ in runs
    ]
    agreement = [
        ("both right", comparison.both),
        ("only A right", len(comparison.only_a)),
        ("only B right", len(comparison.only_b)),
        ("both wrong", comparison.neither),
    ]
    class_rows = [
        (
            row.label,
            row.a.count,
            row.a.hits,
            f"{row.a.corloc:.1f}",
            row.b.hits,
            f"{row.b.corloc:.1f}",
            f"{row.b.corloc - row.a.corloc:+.1f}",
        )
        for row in rows
    ]
    images_b = {image.name: image for image in run_b.images}
    legend = " ".join(_swatch(colour, f"{name}: {run.info.source}") for name, run, _, colour in runs)
    sections = []
    for group, title in (("only_a", "A right, B wrong"), ("only_b", "B right, A wrong")):
        indices = gallery.get(group, ())
        total = len(comparison.only_a if group == "only_a" else comparison.only_b)
        figures = [
            _comparison_thumbnail(run_a.images[i], images_b[run_a.images[i].name], group, i, folder) for i in indices
        ]
        sections.append(f'<h3 id="gallery-{group}">{title} ({len(indices)} of {total} shown)</h3>')
        sections.append(f'<div class="gallery">{"".join(figures)}</div>' if figures else "<p>None.</p>")
    title = f"Comparison on {run_a.info.dataset or 'unknown data set'}: A against B"
    body = [
        f"<h1>{_escape(title)}</h1>",
        '<nav><a href="report.html">Report of A</a></nav>',
        f'<p class="rule">Both runs scored on the {shared} images they share, with A\'s ground truth; an image a run '
        "skipped counts as a miss for it.</p>",
        _table("compare-runs", ["run", "predictions", "method", "hits", "CorLoc (%)"], run_rows, 3),
        _table("agreement", ["images", "count", "share (%)"], [(name, n, _share(n, shared)) for name, n in agreement]),
        '<h2 id="per-class">CorLoc per class</h2>',
        '<p class="rule">An image counts once for each class among its objects. Sorted by B minus A, largest gain '
        "first.</p>",
        '<div class="row"><img class="plot" src="report/compare/corloc_by_class.png" alt="CorLoc per class, A and B">',
        _table(
            "compare-per-class",
            ["class", "images", "A hits", "A CorLoc (%)", "B hits", "B CorLoc (%)", "B - A"],
            class_rows,
        ),
        "</div>",
        '<h2 id="disagreements">Where they disagree</h2>',
        f"<p>{_swatch(GT_COLOUR, 'ground truth')} {legend}</p>",
        *sections,
    ]
    page = output_dir / "compare.html"
    atomic_write(page, _page(title, body).encode("utf-8"))
    return page


# ----------------------------------------------------------------------------------------------
# Building the pages


def _fresh_folder(folder: Path) -> None:
    """Empty `folder` (one this module owns, under <output>/report/), creating it if needed."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)


def _prepare_output(output_dir: Path) -> Path:
    """The report/ folder under `output_dir`, created; LostError when it cannot be written."""
    assets = Path(output_dir) / "report"
    try:
        assets.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LostError(f"--output {output_dir}: cannot create {assets} ({exc}); choose a writable folder") from exc
    return assets


def build_report(
    run: ReportRun,
    output_dir: Path | str,
    *,
    gallery_size: int = DEFAULT_GALLERY_SIZE,
    seed: int = 0,
    links: Sequence[tuple[str, str]] = (),
) -> ReportStats:
    """Write `output_dir/report.html` with its plots and thumbnails under `output_dir/report/`
    (the gallery folder is emptied first): evaluate, accumulate, sample, draw. `links`:
    (relative URL, text) pairs added to the page's navigation. Returns the numbers shown."""
    output_dir = Path(output_dir)
    assets = _prepare_output(output_dir)
    evaluations = evaluate_run(run)
    stats = accumulate(run, evaluations)
    gallery = sample_gallery(evaluations, gallery_size, seed)
    _fresh_folder(assets / "gallery")
    write_report_page(run, stats, gallery, output_dir, links)
    return stats


def build_comparison(
    run_a: ReportRun,
    run_b: ReportRun,
    output_dir: Path | str,
    *,
    gallery_size: int = DEFAULT_GALLERY_SIZE,
    seed: int = 0,
) -> Comparison:
    """Write `output_dir/compare.html` (run A against run B) with its plot and thumbnails under
    `output_dir/report/compare/` (emptied first); the disagreement gallery is a fixed-seed
    sample of `gallery_size` images at most. Returns the numbers shown."""
    output_dir = Path(output_dir)
    assets = _prepare_output(output_dir)
    comparison = compare_runs(run_a, run_b)
    gallery = sample_groups({"only_a": comparison.only_a, "only_b": comparison.only_b}, gallery_size, seed)
    _fresh_folder(assets / "compare")
    write_comparison_page(run_a, run_b, comparison, gallery, output_dir)
    return comparison
