"""Wall time and peak memory of each pipeline step on a tenant config (default: the demo fleet).

Each step runs as its own process, as `mlflow run . -e <step>` would run it, chained through
"latest" into a fresh SQLite store in a temp dir; peak memory is that process's max RSS.
The evaluate step is also timed without its robustness check (`evaluation.robustness: false`)
and, once a Production version exists, with the champion's bootstrap comparison: the table's
`evaluate (...)` rows.

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

import yaml

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
        no_robustness = Path(store) / "no_robustness.yaml"
        variant = yaml.safe_load(config.read_text())
        variant["evaluation"] = {**variant.get("evaluation", {}), "robustness": False}
        variant["gates"] = {**variant.get("gates", {}), "max_robustness_auc_drop": None}
        no_robustness.write_text(yaml.safe_dump(variant))
        rows = []
        for step in STEPS:
            extra = ["--n-trials", str(args.n_trials)] if step == "tune" and args.n_trials else []
            if step == "evaluate":
                seconds, peak = run_step(step, no_robustness, extra, env, store)
                rows.append(("evaluate (no robustness, no champion)", seconds, peak, False))
            rows.append((step, *run_step(step, config, extra, env, store), True))
        # Production exists now: evaluate compares with it (paired bootstrap by device).
        for name, path in (
            ("evaluate (robustness + champion bootstrap)", config),
            ("evaluate (champion bootstrap, no robustness)", no_robustness),
        ):
            rows.append((name, *run_step("evaluate", path, [], env, store), False))
    shown = config.relative_to(REPO) if config.is_relative_to(REPO) else config
    print(f"config: {shown}   python {sys.version.split()[0]}   cores: {os.cpu_count()}")
    width = max(len(r[0]) for r in rows)
    print(f"| {'step':<{width}} | {'wall s':>7} | {'peak RSS MiB':>12} |")
    print(f"|{'-' * (width + 2)}|{'-' * 9}|{'-' * 14}|")
    for step, seconds, peak, _ in rows:
        print(f"| {step:<{width}} | {seconds:7.1f} | {peak:12.0f} |")
    chain = [r for r in rows if r[3]]
    total = sum(r[1] for r in chain)
    print(
        f"| {'total (the six steps)':<{width}} | {total:7.1f} | {max(r[2] for r in chain):12.0f} |"
    )


if __name__ == "__main__":
    main()
