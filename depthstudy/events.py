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
LOSS_TAGS = {"train": TRAIN_LOSS, "val": VAL_LOSS, "test": TEST_LOSS}
# Instruments (depthstudy.diagnostics): one scalar per layer or block, layers/blocks numbered from 0.
RESPONSE_PREFIX = "responses/std/"  # std of each 3x3 layer's response (He 2015 Figure 7)
BLOCK_PREFIX = "blocks/"  # blocks/<branch_ratio|gamma_norm|gamma_rms|weight_norm>/<block>


def response_tag(layer: int) -> str:
    return f"{RESPONSE_PREFIX}{layer:04d}"


def block_tag(quantity: str, block: int) -> str:
    return f"{BLOCK_PREFIX}{quantity}/{block:04d}"


def indexed(curves: dict, prefix: str) -> list[tuple[int, list[tuple[int, float]]]]:
    """The (index, points) of every tag under prefix, in index order."""
    return sorted((int(tag[len(prefix):]), pts) for tag, pts in curves.items() if tag.startswith(prefix))


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

    def close(self) -> None:
        self.writer.close()


def _masked_crc(data: bytes) -> int:
    """TFRecord's masked CRC-32C (google-crc32c: C speed, so every payload can be checked)."""
    import google_crc32c

    x = google_crc32c.value(data)
    return ((((x >> 15) | (x << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def event_file_problem(path: Path, torn_tail_ok: bool = False) -> str | None:
    """Why an event file is damaged (truncated, or a record whose length or data fails its CRC), or None.

    TensorBoard's reader stops quietly at a damaged record and drops what follows; this check makes the
    damage visible. Event files are TFRecord files: u64 length, u32 masked CRC of the length, data,
    u32 masked CRC of the data. torn_tail_ok: a file whose only damage is a torn last record is fine (a
    resumed run's superseded file: the process died while writing, and the resume purged that step).
    """
    import struct

    data = path.read_bytes()
    pos = 0
    while pos < len(data):
        if len(data) - pos < 12:
            return None if torn_tail_ok else f"truncated at byte {pos}"
        header = data[pos:pos + 8]
        (length,), (crc,) = struct.unpack("<Q", header), struct.unpack("<I", data[pos + 8:pos + 12])
        if crc != _masked_crc(header):
            return f"corrupted record at byte {pos}"
        end = pos + 12 + length + 4
        if end > len(data):
            return None if torn_tail_ok else f"truncated at byte {pos}"
        if struct.unpack("<I", data[end - 4:end])[0] != _masked_crc(data[pos + 12:end - 4]):
            return f"corrupted record at byte {pos}"
        pos = end
    return None


def read_scalars(run_dir: Path, with_wall_times: bool = False):
    """Every scalar point of a run, by tag, with TensorBoard's own reader (nothing down-sampled):
    {tag: [(step, value), ...]}, and with_wall_times: also {tag: [unix time of each point, ...]}.

    Raises ValueError naming every damaged event file. Files are read in TensorBoard's order; every file
    but the newest may end in a torn record (a process that died mid-write before the run was resumed).
    """
    files = sorted(Path(run_dir).glob("events.out.tfevents.*"))
    damaged = [f"{p.name} is {problem}" for i, p in enumerate(files)
               if (problem := event_file_problem(p, torn_tail_ok=i < len(files) - 1))]
    if damaged:
        raise ValueError("; ".join(damaged))
    if files and not any(p.stat().st_size for p in files):
        raise ValueError("every event file is empty")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    out, walls = {}, {}
    for tag in acc.Tags()["scalars"]:
        points = acc.Scalars(tag)
        out[tag] = [(e.step, float(e.value)) for e in points]
        walls[tag] = [e.wall_time for e in points]
    return (out, walls) if with_wall_times else out
