"""Wall time and peak memory of each pipeline step on a tenant config (default: the demo fleet).

Each step runs as its own process, as `mlflow run . -e <step>` would run it, chained through
"latest" into a fresh SQLite store in a temp dir; peak memory is that process's max RSS.

    python bench/pipeline.py [--config configs/default.yaml] [--n-trials N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STEPS = ("ingest", "features", "tune", "train", "evaluate", "promote")


def run_step(step: str, config: Path, extra: list[str], env: dict[str, str], cwd: str):
    command = [sys.executable, "-m", "pdmflow.cli", step, "--config", str(config), *extra]
    start = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    stderr = process.stderr.read()
    process.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"{step} failed ({code}):\n{stderr[-2000:]}")
    return seconds, usage.ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "default.yaml")
    parser.add_argument("--n-trials", type=int, default=None)
    args = parser.parse_args()
    config = args.config.resolve()
    with tempfile.TemporaryDirectory() as store:
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": f"sqlite:///{store}/mlflow.db",
            "PYTHONPATH": str(REPO / "src"),
        }
        env.pop("MLFLOW_RUN_ID", None)
        rows = []
        for step in STEPS:
            extra = ["--n-trials", str(args.n_trials)] if step == "tune" and args.n_trials else []
            rows.append((step, *run_step(step, config, extra, env, store)))
    shown = config.relative_to(REPO) if config.is_relative_to(REPO) else config
    print(f"config: {shown}   python {sys.version.split()[0]}   cores: {os.cpu_count()}")
    print(f"| {'step':<9} | {'wall s':>7} | {'peak RSS MiB':>12} |")
    print(f"|{'-' * 11}|{'-' * 9}|{'-' * 14}|")
    for step, seconds, peak in rows:
        print(f"| {step:<9} | {seconds:7.1f} | {peak:12.0f} |")
    total = sum(r[1] for r in rows)
    print(f"| {'total':<9} | {total:7.1f} | {max(r[2] for r in rows):12.0f} |")


if __name__ == "__main__":
    main()
