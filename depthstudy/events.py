"""The one home of TensorBoard tag names, and the writer and reader of a run's event files.

Errors are logged in percent (0-100), as the paper reports them. Any TensorBoard-compatible
writer that uses these tags produces runs that `depthstudy report` can read.
"""

from __future__ import annotations

from pathlib import Path

TRAIN_LOSS = "train/loss"  # mean cross-entropy over the last log window of mini-batches
TRAIN_ERROR = "train/error"  # % misclassified in the last log window of (augmented) training mini-batches
LR = "train/lr"
THROUGHPUT = "perf/images_per_s"  # training images per second over the last log window
EVAL_TIME = "perf/eval_s"  # seconds spent in each evaluation
VAL_ERROR, VAL_LOSS = "val/error", "val/loss"
TEST_ERROR, TEST_LOSS = "test/error", "test/loss"
ERROR_TAGS = {"train": TRAIN_ERROR, "val": VAL_ERROR, "test": TEST_ERROR}


class EventWriter:
    """SummaryWriter for one run directory; on resume, purges steps the crashed process wrote after its checkpoint."""

    def __init__(self, run_dir: Path, resume_step: int | None):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step makes TensorBoard (and our reader) drop events at or after the resume step
        # written by the previous process, so curves never show duplicated or backwards steps.
        self.writer = SummaryWriter(str(run_dir), purge_step=resume_step)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def hparams(self, hparams: dict, metric_tags: list[str]) -> None:
        """The run's hyper-parameters for TensorBoard's HPARAMS tab, in this run's own event file.

        (SummaryWriter.add_hparams would start a second run directory; writing the three
        summaries ourselves keeps one run = one directory.)
        """
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        exp, ssi, sei = hparams_summary(hparams, {tag: None for tag in metric_tags})
        for summary in (exp, ssi, sei):
            self.writer.file_writer.add_summary(summary)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar point of a run, by tag, with TensorBoard's own reader (nothing down-sampled).

    Raises ValueError if an event file cannot be parsed.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    out = {}
    for tag in acc.Tags()["scalars"]:
        out[tag] = [(e.step, float(e.value)) for e in acc.Scalars(tag)]
    return out
