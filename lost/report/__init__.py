"""The run report: what a CorLoc number is made of, as a static HTML page of one run or of two.

- :mod:`lost.report.stats`: the numbers, pycocotools-style: evaluate each image, accumulate the
  counts (per class, per difficulty bin, per miss kind), sample the gallery, compare two runs.
- :mod:`lost.report.pages`: ``report.html`` and ``compare.html`` from those numbers.
- :mod:`lost.report.plots`: the PNG plots and JPEG thumbnails, from plain numbers and boxes
  (matplotlib is imported only when a plot is drawn).
- :mod:`lost.report.runs`: a run's images and description from data-set records, a prediction
  file and the journal beside it.

The names below are what a script needs to write a report (``from lost import report``;
``report.build_report(report.ReportRun(info, images), folder)``). Importing them loads neither
matplotlib nor any model.
"""

from lost.report.pages import build_comparison, build_report
from lost.report.runs import load_run_predictions, report_images, run_info, with_predictions
from lost.report.stats import DEFAULT_GALLERY_SIZE, ReportImage, ReportRun, RunInfo

__all__ = [
    "DEFAULT_GALLERY_SIZE",
    "ReportImage",
    "ReportRun",
    "RunInfo",
    "build_comparison",
    "build_report",
    "load_run_predictions",
    "report_images",
    "run_info",
    "with_predictions",
]
