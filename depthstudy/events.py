"""The one home of TensorBoard tag names, and the writer and reader of a run's event files.

Errors are logged in percent (0-100), as the paper reports them. Any TensorBoard-compatible
writer that uses these tags produces runs that `depthstudy report` can read.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

EVENT_FILES = "events.out.tfevents.*"  # the glob of a run's event files (TensorBoard's own naming)
# The sweep's HPARAMS definition, one copy in each run directory (write_study_experiment). Not in EVENT_FILES: it
# holds no curves, so it is neither a run's event file nor a superseded one. Before "events.out" in name order:
# TensorBoard reads a directory's files in that order and, live, does not go back to an earlier file.
STUDY_EVENT_FILE = "events.hparams.tfevents.study"
TRAIN_LOSS = "train/loss"  # mean cross-entropy over the last log window of mini-batches
TRAIN_ERROR = "train/error"  # % misclassified in the last log window of (augmented) training mini-batches
# The final weights over the whole training split in eval mode (summary.json's train_error), one point at the end:
# the HPARAMS table's training error, so that it shows the number runs, report and summary.json show.
FINAL_TRAIN_ERROR = "train/error_final"
LR = "train/lr"
# Under train/ and val/, not a perf/ group: TensorBoard lists groups sorted and opens the first, which was perf/.
THROUGHPUT = "train/images_per_s"  # training images per second over the last log window
EVAL_TIME = "val/eval_s"  # seconds spent in each evaluation (validation and test)
VAL_ERROR, VAL_LOSS = "val/error", "val/loss"
TEST_ERROR, TEST_LOSS = "test/error", "test/loss"
ERROR_TAGS = {"train": TRAIN_ERROR, "val": VAL_ERROR, "test": TEST_ERROR}
LOSS_TAGS = {"train": TRAIN_LOSS, "val": VAL_LOSS, "test": TEST_LOSS}
# Instruments (depthstudy.diagnostics): one scalar per layer or block, layers/blocks numbered from 0. Under one
# group that sorts after train/ and val/, so TensorBoard's Time Series opens on the error curves, not on a
# hundred single-point instrument cards.
INSTRUMENTS = "z_instruments/"
RESPONSE_PREFIX = INSTRUMENTS + "responses/std/"  # std of each 3x3 layer's response (He 2015 Figure 7)
BLOCK_PREFIX = INSTRUMENTS + "blocks/"  # .../blocks/<branch_ratio|gamma_norm|gamma_rms|weight_norm>/<block>
RENAMED = {"responses/std/": RESPONSE_PREFIX, "blocks/": BLOCK_PREFIX,  # runs written before the group existed
           "perf/images_per_s": THROUGHPUT, "perf/eval_s": EVAL_TIME}  # and before perf/ went


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
        _quiet_writer_threads()

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def session_start(self, hparams: dict) -> None:
        """The run's hyper-parameters for TensorBoard's HPARAMS tab (booleans as booleans, numbers as numbers),
        and the custom-scalars layout, in this run's own event file (one run = one directory)."""
        self._add(_hparams_summary(SESSION_START_TAG, session_start_info=_session_start(hparams)))
        self._add(_layout_summary())

    def session_end(self, ok: bool) -> None:
        """How the run ended, for the HPARAMS tab (finished: success; diverged: failure)."""
        from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

        status = api_pb2.Status.Value("STATUS_SUCCESS" if ok else "STATUS_FAILURE")
        self._add(_hparams_summary(SESSION_END_TAG, session_end_info=plugin_data_pb2.SessionEndInfo(
            status=status, end_time_secs=time.time())))

    def _add(self, summary) -> None:
        self.writer.file_writer.add_summary(summary)

    def close(self) -> None:
        self.writer.close()


def _quiet_writer_threads() -> None:
    """A write that fails in TensorBoard's writer thread (a full disk) is raised again by the next write in the
    training thread, where the run ends in one line: the thread's own traceback is not printed."""
    import threading

    previous = threading.excepthook
    if getattr(previous, "depthstudy", False):
        return

    def hook(args):
        if type(args.thread).__name__ != "_AsyncWriterThread":
            previous(args)

    hook.depthstudy = True
    threading.excepthook = hook


# --- TensorBoard's HPARAMS tab and custom-scalars layout (protos written directly: torch's add_hparams logs
# booleans as numbers and would start a second run directory) ---

SESSION_START_TAG, SESSION_END_TAG, EXPERIMENT_TAG = "_hparams_/session_start_info", "_hparams_/session_end_info", "_hparams_/experiment"
METRIC_TAGS = {FINAL_TRAIN_ERROR: "final train error %", VAL_ERROR: "val error %", TEST_ERROR: "test error %"}
# The columns a study's HPARAMS table always has (before the other keys that vary in the sweep).
HPARAMS_COLUMNS = ("model.depth", "model.shortcut", "optim.weight_decay", "seed")
# Whole numbers the HPARAMS table shows as written: it prints every number with toPrecision(5) (webfiles.zip,
# tf-hparams-utils' prettyPrint), so depth 20 read "20.000", and only a string prints as it is. As strings, right
# aligned in INTEGER_WIDTH spaces (HTML drops the leading ones), they still sort in numeric order (" 110" after
# "  20"), and the discrete domain gives them checkboxes to filter; runs logged before this keep their numbers.
INTEGER_HPARAMS, INTEGER_WIDTH = ("model.depth", "seed"), 6
HPARAM_TRAINER_KEYS = ("precision", "channels_last", "compile", "cuda_graphs", "fused_optimizer", "compile_optimizer")


def hparams_of(config: dict) -> dict:
    """A run's settings as HParams: every model/data/optim/schedule key and seed, and the trainer's speed
    switches; lists as strings, unset values left out."""
    from depthstudy.rundir import RUNTIME_KEYS, flatten

    flat = flatten({k: config[k] for k in ("model", "data", "optim", "schedule", "seed") if k in config})
    flat.update({f"trainer.{k}": config["trainer"][k] for k in HPARAM_TRAINER_KEYS if k in config.get("trainer", {})})
    return {k: v for k, v in flat.items() if v is not None and (k not in RUNTIME_KEYS or k.startswith("trainer."))}


def _value(v, key: str = ""):
    from google.protobuf import struct_pb2

    if key in INTEGER_HPARAMS and isinstance(v, int) and not isinstance(v, bool):
        return struct_pb2.Value(string_value=str(v).rjust(INTEGER_WIDTH))
    if isinstance(v, bool):  # before int: a bool is an int to Python
        return struct_pb2.Value(bool_value=v)
    if isinstance(v, (int, float)):
        return struct_pb2.Value(number_value=v)
    return struct_pb2.Value(string_value=str(v))


def _session_start(hparams: dict):
    from tensorboard.plugins.hparams import plugin_data_pb2

    info = plugin_data_pb2.SessionStartInfo(start_time_secs=time.time())
    for k, v in hparams.items():
        info.hparams[k].CopyFrom(_value(v, k))
    return info


def _hparams_summary(tag: str, **content):
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams import metadata, plugin_data_pb2

    data = plugin_data_pb2.HParamsPluginData(version=metadata.PLUGIN_DATA_VERSION, **content)
    plugin = SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME, content=data.SerializeToString())
    return Summary(value=[Summary.Value(tag=tag, metadata=SummaryMetadata(plugin_data=plugin))])


def study_experiment(configs: list[dict]):
    """The HPARAMS tab's definition for a sweep: columns for depth, shortcut, weight decay, seed and every other
    key that varies, each with its values as a discrete domain (checkboxes to filter and group), and the errors."""
    from tensorboard.plugins.hparams import api_pb2

    values: dict[str, list] = {}
    for c in configs:
        for k, v in hparams_of(c).items():
            if v not in values.setdefault(k, []):
                values[k].append(v)
    keys = [k for k in HPARAMS_COLUMNS if k in values]
    keys += sorted(k for k, v in values.items() if len(v) > 1 and k not in HPARAMS_COLUMNS)
    infos = []
    for k in keys:
        vs = sorted(values[k], key=lambda v: (str(type(v)), v))
        domain = [_value(v, k) for v in vs]  # INTEGER_HPARAMS as strings, as the runs log them
        kind = ("DATA_TYPE_BOOL" if all(d.HasField("bool_value") for d in domain) else "DATA_TYPE_FLOAT64"
                if all(d.HasField("number_value") for d in domain) else "DATA_TYPE_STRING")
        if kind == "DATA_TYPE_STRING":
            domain = [d if d.HasField("string_value") else _value(str(v)) for d, v in zip(domain, vs)]
        from google.protobuf import struct_pb2

        infos.append(api_pb2.HParamInfo(name=k, type=api_pb2.DataType.Value(kind),
                                        domain_discrete=struct_pb2.ListValue(values=domain)))
    metrics = [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=t), display_name=name) for t, name in METRIC_TAGS.items()]
    experiment = api_pb2.Experiment(hparam_infos=infos, metric_infos=metrics, time_created_secs=time.time())
    return _hparams_summary(EXPERIMENT_TAG, experiment=experiment)


def write_study_experiment(sweep_dir: Path, run_dirs: list[Path], configs: list[dict]) -> list[Path]:
    """The sweep's HPARAMS definition, as a STUDY_EVENT_FILE in each run directory (replacing an earlier one):
    TensorBoard takes it from whichever run has it (hparams' backend_context._find_experiment_tag picks the first),
    and an event file at the top of the sweep would be a run named `.` (an earlier sweep's is removed). A copy in
    every run: the columns stay when a run is moved away. TensorBoard's own protos, no torch in a sweep's process."""
    import io

    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.summary.writer.record_writer import RecordWriter

    from depthstudy.rundir import atomic_write_bytes

    for old in sweep_dir.glob(EVENT_FILES + ".study"):
        old.unlink()
    buffer = io.BytesIO()
    records = RecordWriter(buffer)
    now = time.time()
    records.write(Event(wall_time=now, file_version="brain.Event:2").SerializeToString())
    records.write(Event(wall_time=now, summary=study_experiment(configs)).SerializeToString())
    paths = []
    for run_dir in run_dirs:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(run_dir / STUDY_EVENT_FILE, lambda f: f.write(buffer.getvalue()))
        paths.append(run_dir / STUDY_EVENT_FILE)
    return paths


def _layout_summary():
    """TensorBoard's CUSTOM SCALARS tab: He 2015 Figure 6's curves first (every run, one chart per error), the
    training signals next, the instruments folded away."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.compat.proto.tensor_pb2 import TensorProto
    from tensorboard.plugins.custom_scalar import layout_pb2, metadata

    def chart(title, *tags):
        return layout_pb2.Chart(title=title, multiline=layout_pb2.MultilineChartContent(tag=list(tags)))

    layout = layout_pb2.Layout(category=[
        layout_pb2.Category(title="Figure 6: error (%) vs iterations (filter runs by name: plain, res)", chart=[
            chart("training error %", f"^{TRAIN_ERROR}$"), chart("test error %", f"^{TEST_ERROR}$"),
            chart("validation error %", f"^{VAL_ERROR}$")]),
        layout_pb2.Category(title="training", chart=[
            chart("training loss", f"^{TRAIN_LOSS}$"), chart("learning rate", f"^{LR}$"),
            chart("images / s", f"^{THROUGHPUT}$")]),
        layout_pb2.Category(title="instruments (final values: see depthstudy report)", closed=True, chart=[
            chart("layer response std", f"^{RESPONSE_PREFIX}"), chart("blocks", f"^{BLOCK_PREFIX}")]),
    ])
    tensor = TensorProto(dtype="DT_STRING", string_val=[layout.SerializeToString()])
    meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME))
    return Summary(value=[Summary.Value(tag=metadata.CONFIG_SUMMARY_TAG, tensor=tensor, metadata=meta)])


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
    files = sorted(Path(run_dir).glob(EVENT_FILES))
    damaged = [f"{p.name} is {problem}" for i, p in enumerate(files)
               if (problem := event_file_problem(p, torn_tail_ok=i < len(files) - 1))]
    if damaged:
        raise ValueError("; ".join(damaged))
    if files and not any(p.stat().st_size for p in files):
        raise ValueError("every event file is empty")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    quiet = logging.getLogger("tensorboard")  # its "out of order event.step ... Purging" is a resumed run's purge_step
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        acc.Reload()
    finally:
        quiet.setLevel(level)
    out, walls = {}, {}
    for tag in acc.Tags()["scalars"]:
        points = acc.Scalars(tag)
        name = next((new + tag[len(old):] for old, new in RENAMED.items() if tag.startswith(old)), tag)
        merged = sorted([*zip(out.get(name, []), walls.get(name, [])),  # a run that logged both the old and new tag
                         *(((e.step, float(e.value)), e.wall_time) for e in points)], key=lambda pw: pw[0][0])
        out[name], walls[name] = [p for p, _ in merged], [w for _, w in merged]
    return (out, walls) if with_wall_times else out
