"""The prepared GPU check (issue 14): every number a GPU session should bring back, in one JSON file.

    python scripts/gpu_check.py --out gpu_check.json            # on the GPU machine: at most --budget s (420)
    python scripts/gpu_check.py --smoke --out /tmp/smoke.json   # here, on a CPU: the same plumbing in ~2 minutes

Steps, most important first, each with its own time limit, each recorded even when it fails; a step that no
longer fits in --budget seconds (default 420: the device tool lends 15 minutes, machine start included) is
recorded as skipped:
 1. pytest -m cuda
 2. bench, the default path (CUDA graphs, fp32) against the reference loop: ResNet-20
 3. train experiment=he2015, ResNet-20, 3,000 iterations, on synthetic CIFAR-10-format data (50k + 10k random
    images; only torchvision's md5 check is bypassed, in this script)
 4. bench --concurrent 1,2,4: k ResNet-20 training processes at once on the one GPU, aggregate images/s (kept
    for trainer.jobs_per_gpu=auto; the JSON says what k a sweep would take)
 5. bench ResNet-110 as in 2; bench with the SGD update compiled too (--compile-optimizer: worth the default?)
 6. train ResNet-110 (500 iterations), and ResNet-20 with trainer.compile_optimizer=true
 7. bench CUDA graphs + bf16, and eager fp32 (--no-cuda-graphs; both measured once before, on an H200)
No network is needed. Run it from the repository root with depthstudy importable.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# A train run in a child process, with torchvision's md5 check bypassed (random images cannot match it).
TRAIN = ("import sys; from pathlib import Path; from torchvision.datasets import cifar; "
         "cifar.check_integrity = lambda path, md5=None: Path(path).is_file(); "
         "from depthstudy.cli import app; app(['train', *sys.argv[1:]])")


def sh(args: list[str], timeout: float, env: dict | None = None) -> dict:
    """Run a step in its own process group: at its time limit the whole group is killed, so that no child of it
    (bench --concurrent's training processes) goes on holding the GPU through the next steps."""
    started = time.perf_counter()
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                         env={**os.environ, **(env or {})}, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        rc = "timeout"
    # what compiling did, wherever it was said: a fallback to eager, skipped CUDA graphs, the compile time
    said = [ln.strip() for ln in out.splitlines() if any(k in ln for k in ("eagerly instead", "inductor skipped",
                                                                            "(compiling) took", "recompile_limit"))]
    return {"cmd": " ".join(args), "rc": rc, "seconds": round(time.perf_counter() - started, 1), "said": said[:20],
            "tail": out[-1500:]}


def summary_of(run_root: Path) -> dict:
    found = list(run_root.rglob("summary.json"))
    return json.loads(found[0].read_text()) if found else {}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny budgets: check the script itself")
    ap.add_argument("--work", type=Path, default=Path("/tmp/depthstudy-gpu-check"))
    ap.add_argument("--budget", type=float, default=420, help="seconds for all steps together")
    args = ap.parse_args()
    smoke = args.smoke
    device = "cpu" if smoke else "cuda"
    py = sys.executable
    work = args.work
    if work.exists():  # runs of an earlier check (maybe of an older depthstudy) must not be resumed or skipped
        import shutil

        shutil.rmtree(work)
    work.mkdir(parents=True)
    env = {"XDG_CACHE_HOME": str(work / "cache"), "PYTHONUNBUFFERED": "1"}
    report: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "smoke": smoke, "python": platform.python_version(),
                    "budget_s": args.budget}
    deadline = time.perf_counter() + args.budget

    import torch

    report["torch"] = torch.__version__
    report["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None

    def save() -> None:
        args.out.write_text(json.dumps(report, indent=1))

    def run(cmd: list[str], limit: float) -> dict:
        """The command under min(its limit, what is left of the budget); skipped when under 20 s are left."""
        left = deadline - time.perf_counter()
        if left < 20:
            return {"cmd": " ".join(cmd), "rc": "skipped: out of budget"}
        return sh(cmd, min(limit, left), env)

    data_root = work / "cifar"
    sys.path.insert(0, str(ROOT))
    from depthstudy.bench import write_synthetic_cifar

    write_synthetic_cifar(data_root, per_file=200 if smoke else 10000)
    steps = ["--steps", "2", "--warmup", "1"] if smoke else ["--steps", "30", "--warmup", "10", "--rounds", "2"]
    graphs = [] if smoke else ["--cuda-graphs"]

    def bench(name: str, models: str, extra: list[str], limit: float) -> None:
        path = work / f"bench_{name}.json"
        result = run([py, "-m", "depthstudy", "bench", "--device", device, "--models", "resnet20" if smoke else models,
                      *steps, *extra, "--json", str(path)], 60 if smoke else limit)
        if path.exists():
            data = json.loads(path.read_text())
            result["models"] = {m["model"]: {"ours_images_per_s": round(m["ours"]["images_per_s"]),
                                             "reference_images_per_s": round(m["reference"]["images_per_s"]),
                                             "ratio": round(m["ratio"], 3),
                                             **({"vs_ours_fp32": round(m["precision_speedup"], 3)}
                                                if "precision_speedup" in m else {})} for m in data.get("models", [])}
        report.setdefault("bench", {})[name] = result
        save()

    def train(name: str, depth: int, iterations: int, extra: list[str], limit: float) -> None:
        out_dir = work / f"train_{name}"
        result = run([py, "-c", TRAIN, "experiment=he2015", f"model.depth={depth}", f"schedule.iterations={iterations}",
                      "schedule.milestones=[0.5,0.75]", f"data.root={data_root}", f"trainer.device={device}",
                      "trainer.eval_every=0", f"trainer.log_every={10 if smoke else 100}", "trainer.progress=lines",
                      f"out_dir={out_dir}", *(["data.val_size=0"] if smoke else []), *extra], 120 if smoke else limit)
        s = summary_of(out_dir)
        result.update({k: s.get(k) for k in ("status", "train_images_per_s", "wall_time_s", "eval_time_s",
                                             "compile_time_s", "params")})
        report.setdefault("train", {})[name] = result
        save()

    def concurrent() -> None:
        path = work / "bench_concurrent.json"
        result = run([py, "-m", "depthstudy", "bench", "--device", device, "--models", "resnet20", "--concurrent",
                      "1,2" if smoke else "1,2,4", *(["--steps", "2", "--warmup", "1"] if smoke else
                                                     ["--steps", "50", "--warmup", "10", "--cuda-graphs"]),
                      "--json", str(path)], 120 if smoke else 200)
        if path.exists():
            (row,) = json.loads(path.read_text())["models"]
            result["aggregate_images_per_s"] = {str(m["runs"]): round(m["aggregate_images_per_s"]) for m in row["concurrent"]}
            result["jobs_per_gpu_auto"] = row["best_runs_at_once"]
        report["concurrent"] = result
        save()

    # Most important first: correctness, the default path against the reference, the paper's run, runs per GPU,
    # then the opt-ins whose default is to be decided, then what was measured before.
    # (no -x: a failing test must not hide the others' results)
    report["pytest_cuda"] = run([py, "-m", "pytest", "-q", "-m", "cuda"], 60 if smoke else 180)
    save()
    bench("graphs_fp32", "resnet20", graphs, 90)  # one model per call: a step cut at its limit loses only its own
    train("resnet20", 20, 20 if smoke else 3000, [], 90)
    concurrent()
    bench("graphs_fp32_resnet110", "resnet110", graphs, 90)
    bench("graphs_fp32_update", "resnet20", [*graphs, "--compile-optimizer"], 60)
    train("resnet110", 110, 4 if smoke else 500, [], 90)
    train("resnet20_update", 20, 20 if smoke else 3000, ["trainer.compile_optimizer=true"], 90)
    bench("graphs_bf16", "resnet20", [*graphs, "--precision", "bf16"], 60)
    bench("eager_fp32", "resnet20,resnet110", ["--no-cuda-graphs"], 60)
    report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    save()
    print(json.dumps(report, indent=1)[-3000:])


if __name__ == "__main__":
    main()
