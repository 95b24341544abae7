"""The training step alone, without any data loader: depthstudy's (channels_last, fused SGD) against
the eager NCHW step with PyTorch's default SGD. Says how much of `depthstudy bench`'s ratio the step
itself can give on this machine; the rest of that ratio is the loader.

    python scripts/bench_step_only.py --depths 20,56 --rounds 6
"""

import argparse
import statistics
import time

import torch

from depthstudy import config
from depthstudy.models import build_model
from depthstudy.device import autocast_for, cpu_threads
from depthstudy.train import LossAndErrors, train_step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depths", default="20,56")
    ap.add_argument("--rounds", type=int, default=6, help="alternating measurements per path")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per measurement (median taken)")
    ap.add_argument("--batch", type=int, default=128)
    args = ap.parse_args()
    torch.set_num_threads(cpu_threads("auto"))
    win, autocast = torch.zeros(3), autocast_for(torch.device("cpu"), "fp32")
    for depth in (int(d) for d in args.depths.split(",")):
        cfg = config.compose([f"model.depth={depth}", "model.shortcut=A"])
        paths = {}
        for name, fmt, fused in (("ours", torch.channels_last, True), ("eager NCHW", torch.contiguous_format, False)):
            torch.manual_seed(0)
            model = build_model(cfg.model, (3, 32, 32), 10).to(memory_format=fmt)
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4, fused=fused or None)
            x = torch.randn(args.batch, 3, 32, 32).contiguous(memory_format=fmt)
            y = torch.randint(0, 10, (args.batch,))
            paths[name] = (LossAndErrors(model), opt, x, y)
        rates = {name: [] for name in paths}
        for r in range(args.rounds):
            for name in (list(paths) if r % 2 == 0 else list(paths)[::-1]):
                model, opt, x, y = paths[name]
                train_step(model, opt, x, y, autocast, win)  # untimed: caches, buffers
                times = []
                for _ in range(args.steps):
                    t = time.perf_counter()
                    train_step(model, opt, x, y, autocast, win)
                    times.append(time.perf_counter() - t)
                rates[name].append(args.batch / statistics.median(times))
        ours, eager = (statistics.median(rates[n]) for n in paths)
        print(f"ResNet-{depth}: ours {ours:.0f} img/s, eager NCHW {eager:.0f} img/s, step ratio {ours / eager:.2f}x")


if __name__ == "__main__":
    main()
