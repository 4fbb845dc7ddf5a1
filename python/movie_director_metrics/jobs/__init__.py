"""Jobs: generation requests from submission to result (see ``tracker``)."""

from .job import Job, JobSink
from .outlook import Eta, JobOutlook, StuckRule
from .rows import JOB_COLUMNS, STORED_COLUMNS, JobRow, QueuedJob
from .tracker import BY, OTHER_LABEL, JobStats, JobTracker, SeriesKey
from .vram import VramFit, vram_fits

__all__ = [
    "BY",
    "Eta",
    "JobOutlook",
    "StuckRule",
    "JOB_COLUMNS",
    "OTHER_LABEL",
    "STORED_COLUMNS",
    "Job",
    "JobRow",
    "JobSink",
    "JobStats",
    "JobTracker",
    "QueuedJob",
    "SeriesKey",
    "VramFit",
    "vram_fits",
]
