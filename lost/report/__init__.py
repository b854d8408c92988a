"""The run report: what a CorLoc number is made of, as a static HTML page of one run or of two.

- :mod:`lost.report.stats`: the numbers, pycocotools-style: evaluate each image, accumulate the
  counts (per class, per difficulty bin, per miss kind), sample the gallery, compare two runs.
- :mod:`lost.report.pages`: ``report.html`` and ``compare.html`` from those numbers.
- :mod:`lost.report.plots`: the PNG plots and JPEG thumbnails, from plain numbers and boxes
  (matplotlib is imported only when a plot is drawn).
- :mod:`lost.report.runs`: a run's images and description from data-set records, a prediction
  file and the journal beside it.

The names below are the report's public face (``from lost import report``;
``report.build_report(report.ReportRun(...), folder)``). Importing them loads neither matplotlib
nor any model.
"""

from lost.report.pages import build_comparison, build_report, write_comparison_page, write_report_page
from lost.report.runs import (
    UNLABELLED,
    image_size,
    load_run_predictions,
    method_description,
    prediction_kind,
    report_images,
    run_info,
    with_predictions,
)
from lost.report.stats import (
    AREA_BINS,
    CONTAINMENT,
    COUNT_BINS,
    DEFAULT_GALLERY_SIZE,
    GALLERY_GROUPS,
    MISS_KINDS,
    ClassComparison,
    Comparison,
    GroupCorLoc,
    Headline,
    ImageEvaluation,
    ReportImage,
    ReportRun,
    ReportStats,
    RunInfo,
    accumulate,
    area_bin,
    area_share,
    compare_runs,
    corloc_by_area,
    corloc_by_class,
    corloc_by_object_count,
    count_bin,
    evaluate_image,
    evaluate_run,
    miss_kind,
    miss_kind_counts,
    sample_gallery,
    sample_groups,
    split_quota,
)

__all__ = [
    "AREA_BINS",
    "CONTAINMENT",
    "COUNT_BINS",
    "DEFAULT_GALLERY_SIZE",
    "GALLERY_GROUPS",
    "MISS_KINDS",
    "UNLABELLED",
    "ClassComparison",
    "Comparison",
    "GroupCorLoc",
    "Headline",
    "ImageEvaluation",
    "ReportImage",
    "ReportRun",
    "ReportStats",
    "RunInfo",
    "accumulate",
    "area_bin",
    "area_share",
    "build_comparison",
    "build_report",
    "compare_runs",
    "corloc_by_area",
    "corloc_by_class",
    "corloc_by_object_count",
    "count_bin",
    "evaluate_image",
    "evaluate_run",
    "image_size",
    "load_run_predictions",
    "method_description",
    "miss_kind",
    "miss_kind_counts",
    "prediction_kind",
    "report_images",
    "run_info",
    "sample_gallery",
    "sample_groups",
    "split_quota",
    "with_predictions",
    "write_comparison_page",
    "write_report_page",
]
