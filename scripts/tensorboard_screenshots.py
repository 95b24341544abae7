"""Screenshots of TensorBoard's views of a study, taken by headless Chromium (Debian's `chromium` package).

    python scripts/tensorboard_screenshots.py runs/quick docs/tensorboard

Starts TensorBoard on 127.0.0.1 (a free port), waits until it answers, saves hparams.png, custom_scalars.png
and timeseries.png, and stops TensorBoard. Nothing leaves this machine.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

VIEWS = ("hparams", "custom_scalars", "timeseries")
CHROMIUM = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--window-size=1600,1000", "--virtual-time-budget=20000"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(runs: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    tb = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(runs), "--host", "127.0.0.1",
                           "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugins_listing", timeout=2).read()
                break
            except OSError:
                if time.time() > deadline or tb.poll() is not None:
                    raise SystemExit("TensorBoard did not start")
                time.sleep(0.5)
        time.sleep(3)  # let it load the event files
        for view in VIEWS:
            with tempfile.TemporaryDirectory() as profile:
                subprocess.run([*CHROMIUM, f"--user-data-dir={profile}", f"--screenshot={out / view}.png",
                                f"http://127.0.0.1:{port}/#{view}"], check=True, timeout=90,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            print(out / f"{view}.png")
    finally:
        tb.terminate()
        tb.wait(timeout=10)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
