"""Targeted mutation check: break, one at a time, the behaviours the study's numbers rest on, and see
whether the default test suite notices.

Each mutation is one small source edit (a string replaced exactly once in one file). For each, the
file is edited, `python -m pytest -x -q` runs (the default suite: slow tests stay deselected, as in
CI), and the file is restored, whatever happens. A mutation is *killed* when the suite fails,
*survives* when it passes. The score is killed / total.

    python scripts/mutation_check.py                  # every mutation, the whole default suite
    python scripts/mutation_check.py --list           # what would be mutated
    python scripts/mutation_check.py --only option_a,purge  # mutations whose name contains any of these
    python scripts/mutation_check.py --json out.json  # also write the results

Test files run in an order that puts the quick, model-level ones first, so killed mutants stop early
(`-x`); a survivor costs one run of the whole suite (about 2-3 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str  # relative to the repository root
    old: str  # must occur exactly once in the file
    new: str


MUTATIONS = [
    # --- models: shortcuts, blocks, init ---
    Mutation("option_a_pads_in_front", "depthstudy/models.py",
             "return F.pad(x, (0, 0, 0, 0, 0, self.extra))", "return F.pad(x, (0, 0, 0, 0, self.extra, 0))"),
    Mutation("option_a_pads_with_ones", "depthstudy/models.py",
             "return F.pad(x, (0, 0, 0, 0, 0, self.extra))", "return F.pad(x, (0, 0, 0, 0, 0, self.extra), value=1.0)"),
    Mutation("option_a_subsamples_from_1", "depthstudy/models.py",
             "x = x[:, :, :: self.stride, :: self.stride]", "x = x[:, :, 1:: self.stride, 1:: self.stride]"),
    Mutation("residual_connection_dropped", "depthstudy/models.py",
             "out = s + f  # the residual connection", "out = f"),
    Mutation("option_b_projects_everywhere", "depthstudy/models.py",
             'if kind == "C" or (kind == "B" and resizes):', 'if kind in ("B", "C"):'),
    Mutation("post_block_loses_final_relu", "depthstudy/models.py",
             'return F.relu(out) if self.unit == "post" else out', "return out"),
    Mutation("relu_before_add_loses_its_relu", "depthstudy/models.py",
             'if i < last or self.unit == "relu_before_add":', "if i < last:"),
    Mutation("bottleneck_stride_ignored", "depthstudy/models.py",
             'bias, first = spec.norm == "none", spec.bottleneck_stride == "1x1"', 'bias, first = spec.norm == "none", False'),
    Mutation("nesterov_ignored", "depthstudy/optim.py", 'nesterov=bool(o.get("nesterov", False))', "nesterov=False"),
    Mutation("he2016_table2_under_he2015s_recipe", "depthstudy/papers.py",
             'Table("He 2016 Table 2", ("experiment=he2016",)', 'Table("He 2016 Table 2", ("experiment=he2015",)'),
    Mutation("gate_bias_not_initialised", "depthstudy/models.py",
             "nn.init.constant_(block.gate.bias, spec.gate_bias)", "pass"),
    Mutation("he_init_fan_out", "depthstudy/schema.py", 'init_mode: str = "fan_in"', 'init_mode: str = "fan_out"'),
    Mutation("zero_gamma_not_applied", "depthstudy/models.py",
             "                block.zero_branch()", "                pass"),
    # --- data: splits, normalisation, the batch stream ---
    Mutation("test_split_overlaps_val", "depthstudy/data.py",
             "test = take(order[val_size:val_size + test_size])", "test = take(order[val_size - 10:val_size - 10 + test_size])"),
    Mutation("train_split_overlaps_test", "depthstudy/data.py",
             "train = take(order[val_size + test_size:])", "train = take(order[val_size:])"),
    Mutation("mean_over_all_images", "depthstudy/data.py",
             "normalization(train.images, str(data_cfg.normalize))", "normalization(images, str(data_cfg.normalize))"),
    Mutation("batches_depend_on_history", "depthstudy/data.py",
             "g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)",
             'g = self.__dict__.setdefault("_g", torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))'),
    Mutation("same_order_every_epoch", "depthstudy/data.py",
             "manual_seed(self.seed * 1_000_003 + epoch)", "manual_seed(self.seed * 1_000_003)"),
    Mutation("flip_never_applied", "depthstudy/data.py",
             "cols = torch.where(flips[:, None], cols.flip(1), cols)", "cols = cols"),
    Mutation("eval_drops_last_partial_batch", "depthstudy/data.py",
             "for i in range(0, len(split), batch_size):", "for i in range(0, len(split) - batch_size + 1, batch_size):"),
    # --- optimizer and schedule ---
    Mutation("no_decay_group_decayed", "depthstudy/optim.py",
             '{"params": no_decay, "weight_decay": 0.0}', '{"params": no_decay, "weight_decay": o.weight_decay}'),
    Mutation("wd_scope_weights_decays_1d", "depthstudy/optim.py", "p.ndim > 1", "p.ndim >= 1"),
    Mutation("milestone_off_by_one", "depthstudy/optim.py", "step >= m for m", "step > m for m"),
    Mutation("caffe_momentum_never_used", "depthstudy/train.py", 'caffe = run.cfg.optim.momentum_form == "caffe"', "caffe = False"),
    Mutation("warmup_ends_above_threshold", "depthstudy/optim.py",
             "< self.warmup_until", "> self.warmup_until"),
    Mutation("warmup_ends_at_threshold", "depthstudy/optim.py",
             "< self.warmup_until", "<= self.warmup_until"),
    Mutation("warmup_ignores_max_iterations", "depthstudy/optim.py",
             "or done >= self.warmup_max", "or False"),
    # --- evaluation ---
    Mutation("eval_in_train_mode", "depthstudy/train.py",
             "with evaluating(model), autocast():", "with torch.no_grad(), autocast():"),
    Mutation("eval_splits_swapped", "depthstudy/train.py",
             '(("val", run.data.val), ("test", run.data.test))', '(("val", run.data.test), ("test", run.data.val))'),
    Mutation("train_error_counts_right_answers", "depthstudy/train.py",
             "wrong = (logits.detach().argmax(1) != y).sum()", "wrong = (logits.detach().argmax(1) == y).sum()"),
    # --- resume: the event writer and the checkpoint ---
    Mutation("purge_step_removed", "depthstudy/events.py",
             "SummaryWriter(str(run_dir), purge_step=resume_step)", "SummaryWriter(str(run_dir))"),
    Mutation("purge_from_checkpoint_step", "depthstudy/train.py", "resume_step=state.step + 1", "resume_step=state.step"),
    Mutation("optimizer_state_not_restored", "depthstudy/train.py",
             'load_state(run.optimizer, saved["optimizer"])', "pass"),
    # --- growing a trained net, the lecture's instruments ---
    Mutation("grown_zero_block_not_zeroed", "depthstudy/grow.py", "        block.zero_branch()\n        return",
             "        return"),
    Mutation("grown_blocks_inserted_first", "depthstudy/grow.py",
             "for i, j in zip(old, fresh):", "for i, j in zip(old, fresh[len(fresh) - len(old):]):"),
    Mutation("zeroed_branch_not_zeroed", "depthstudy/diagnostics.py", "zeros = {n: torch.zeros_like(p) for",
             "zeros = {n: p.clone() for"),
    Mutation("gamma_rms_is_the_norm", "depthstudy/diagnostics.py",
             '"gamma_rms": gamma / math.sqrt(last.weight.numel())', '"gamma_rms": gamma'),
    # --- the things users read: names, estimates, TensorBoard ---
    Mutation("run_dir_without_hash", "depthstudy/config.py", 'return f"{run_name}{slug}-{digest}"', 'return f"{run_name}{slug}"'),
    Mutation("estimate_ignores_evaluation", "depthstudy/estimate.py",
             "out.append(Estimate(iterations * step_s + _eval_seconds(cfg, step_s, evaluations), step_s, cached))",
             "out.append(Estimate(iterations * step_s, step_s, cached))"),
    # --- sweeps: what is launched, what counts as the same experiment, Ctrl-C, runs per GPU ---
    Mutation("sweep_launches_finished_runs", "depthstudy/sweep.py",
             "todo = [r for r in grid_runs if r.status not in FINAL_STATUSES]", "todo = list(grid_runs)"),
    Mutation("unrecorded_keys_compared_strictly", "depthstudy/rundir.py",
             "a.update({k: b[k] for k in unrecorded if k in default and default[k] == b[k]})", "pass"),
    Mutation("stop_file_per_sweep", "depthstudy/interrupt.py",
             'self.stop_file, self.interrupted = sweep_temp_dir() / "stop", False',
             'self.stop_file, self.interrupted = sweep_temp_dir() / f"stop-{id(self)}", False'),
    Mutation("gpu_jobs_ignore_k", "depthstudy/sweep.py", "return self.given_jobs or self.per_gpu * self.gpus",
             "return self.given_jobs or self.gpus"),
    Mutation("given_n_jobs_on_gpus_as_cpu_workers", "depthstudy/sweep.py",
             "return min(self.gpus, self.n_jobs) * (self.gain or 1.0)", "return self.n_jobs * (self.gain or 1.0)"),
    Mutation("hparams_booleans_as_numbers", "depthstudy/events.py",
             "    if isinstance(v, bool):  # before int: a bool is an int to Python\n        return struct_pb2.Value(bool_value=v)\n",
             ""),
    # --- this session: the compiled iteration, damaged runs, mistyped keys, estimates ---
    Mutation("momentum_buffers_made_in_first_step", "depthstudy/optim.py",
             'optimizer.state[p].setdefault("momentum_buffer", torch.zeros_like(p))', "pass"),
    Mutation("fallback_keeps_bn_statistics_of_failed_call", "depthstudy/device.py",
             "                    b.copy_(before)", "                    pass"),
    Mutation("unreadable_config_grouped", "depthstudy/runs.py",
             "for r in (r for r in runs if r.config):", "for r in runs:"),
    Mutation("unfinished_external_run_averaged", "depthstudy/runs.py",
             "if isinstance(total, int) and steps and steps[-1] < total:", "if False:"),
    Mutation("lost_summary_rebuilt_without_train_error", "depthstudy/train.py",
             'if status == "finished" and "train_loss" not in last:', "if False:"),
    Mutation("plus_key_appended", "depthstudy/config.py",
             'adds_a_key = o.startswith("+") and', "adds_a_key = False and"),
    Mutation("busy_calibration_kept", "depthstudy/estimate.py", "if fresh and not busy:", "if fresh:"),
    # --- trust: damaged runs named, never averaged (session 5) ---
    Mutation("pad_fill_mean_pads_first", "depthstudy/data.py", 'elif self.pad_fill == "mean":', "elif False:"),
    Mutation("training_curve_gaps_ignored", "depthstudy/runs.py",
             "problems += disagreements(run) or gaps(run)", "problems += disagreements(run)"),
    Mutation("incomplete_config_placed", "depthstudy/runs.py", "    if wrong:  # a torn file", "    if False:  # a torn file"),
    Mutation("finished_run_without_curves_averaged", "depthstudy/runs.py",
             'if not steps and s.get("iterations"):', "if False:"),
    Mutation("summary_field_types_unchecked", "depthstudy/rundir.py",
             "if value is not None and (not isinstance(value, types) or isinstance(value, bool)):", "if False:"),
    Mutation("lost_config_rerun_continues", "depthstudy/rundir.py", "        if trained:", "        if False:"),
    Mutation("summary_not_written_at_checkpoints", "depthstudy/train.py",
             '                summary["iterations"] = done\n', '                pass\n'),
    Mutation("milestones_on_one_iteration_accepted", "depthstudy/config.py", "_check(len(set(at)) == len(at),",
             "_check(True,"),
    Mutation("diverged_run_checked_as_finished", "depthstudy/runs.py", 'if s.get("status") != "finished":',
             'if s.get("status") not in ("finished", "diverged"):'),
    Mutation("resume_cadences_ignored", "depthstudy/runs.py",
             '*(run.summary.get("log_every_used") or [])]', "]"),
    Mutation("warmup_inert_keys_compared", "depthstudy/rundir.py",
             "inert = inert_keys(a) & inert_keys(b)", "inert = set()"),
]

# Quick, model-level tests first: a killed mutant stops at its first failure (-x).
TEST_ORDER = ["tests/test_models.py", "tests/test_variants.py", "tests/test_lecture.py", "tests/test_data.py", "tests/test_train.py",
              "tests/test_study.py", "tests/test_faults.py", "tests/test_reliability.py"]


def test_args() -> list[str]:
    """Every test file, the quick model-level ones first (a directory argument would make pytest collect
    alphabetically, whatever the order of the files named before it)."""
    first = [t for t in TEST_ORDER if (ROOT / t).exists()]
    rest = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                  if str(p.relative_to(ROOT)) not in first)
    return first + rest


def run_suite(tests: list[str] | None = None) -> subprocess.CompletedProcess:
    # PYTHONPATH: tests that start `python -m depthstudy` in another directory import this tree too.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # SIGINT handled as usual in the suite even when this script runs as a background job (which ignores it):
    # the Ctrl-C tests send it.
    # -n 0: in one process, in TEST_ORDER, so that -x stops a killed mutant at its first failing file
    return subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-n", "0", *(tests or test_args())], cwd=ROOT,
                          capture_output=True, text=True, env=env,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def run_one(m: Mutation, tests: list[str] | None = None) -> dict:
    path = ROOT / m.path
    original = path.read_text()
    count = original.count(m.old)
    if count != 1:
        return {"name": m.name, "result": "stale", "detail": f"{m.path}: pattern found {count} times, not once"}
    mutated = original.replace(m.old, m.new)
    try:
        compile(mutated, str(path), "exec")
    except SyntaxError as e:  # a mutation that no longer fits the code it was written for
        return {"name": m.name, "result": "invalid", "detail": f"{m.path}: the edit does not compile ({e.msg})"}
    t0 = time.perf_counter()
    try:
        path.write_text(mutated)
        proc = run_suite(tests)
    finally:
        path.write_text(original)
    failed = [ln.split(" ")[1] for ln in proc.stdout.splitlines() if ln.startswith(("FAILED ", "ERROR "))]
    # pytest exits 1 when tests failed; anything else (2-5: interrupted, internal or usage error, nothing
    # collected) means the suite could not judge the mutant.
    result = {0: "survived", 1: "killed"}.get(proc.returncode, "error")
    return {"name": m.name, "result": result, "by": failed[0] if failed else proc.stdout[-300:] * (result == "error"),
            "seconds": round(time.perf_counter() - t0, 1)}


def _stop(signum, frame):
    raise KeyboardInterrupt  # so that run_one's finally restores the mutated file


def main() -> int:
    signal.signal(signal.SIGTERM, _stop)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="run only mutations whose name contains this (comma-separated: any of these)")
    ap.add_argument("--list", action="store_true", help="list the mutations and exit")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--tests", nargs="+", help="run these pytest arguments instead of the default suite (quick checks)")
    args = ap.parse_args()
    wanted = [w for w in (args.only or "").split(",") if w]
    chosen = [m for m in MUTATIONS if not wanted or any(w in m.name for w in wanted)]
    if args.list:
        for m in chosen:
            print(f"{m.name:36} {m.path}: {m.old!r} -> {m.new!r}")
        return 0
    baseline = run_suite(args.tests)  # a suite that fails unmutated would "kill" every mutant
    if baseline.returncode != 0:
        print(f"the unmutated suite does not pass (exit {baseline.returncode}):\n{baseline.stdout[-2000:]}{baseline.stderr[-2000:]}")
        return 2
    print(f"unmutated suite passes; {len(chosen)} mutations", flush=True)
    results = []
    for m in chosen:
        r = run_one(m, args.tests)
        results.append(r)
        print(f"{r['result']:9} {m.name:36} {r.get('by') or r.get('detail', '')} ({r.get('seconds', 0)} s)", flush=True)
    killed = sum(r["result"] == "killed" for r in results)
    print(f"score: {killed}/{len(results)} killed; survived: "
          f"{', '.join(r['name'] for r in results if r['result'] != 'killed') or 'none'}")
    if args.json:
        args.json.write_text(json.dumps({"killed": killed, "total": len(results), "results": results}, indent=2))
    return 0 if killed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
