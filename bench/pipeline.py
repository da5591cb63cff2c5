"""Wall time and peak memory of each pipeline step on a tenant config (default: the demo fleet).

Each step runs as its own process, as `mlflow run . -e <step>` would run it, chained through
"latest" into a fresh SQLite store in a temp dir; peak memory is that process's max RSS.
The evaluate step is also timed without its robustness check (`evaluation.robustness: false`)
and, once a Production version exists, with the champion's bootstrap comparison: the table's
`evaluate (...)` rows.

    python bench/pipeline.py [--config configs/default.yaml] [--n-trials N]
    python bench/pipeline.py --rows 10000 100000 1000000 [--n-trials N]

With `--rows`, the whole chain (no extra evaluate variants) runs once per fleet size: the
config's synthetic fleet with as many devices as give that many readings, beside the brief's
reference figures on a desktop i7.
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
# The brief's figures for the whole pipeline on a desktop i7 (rows, trials): minutes.
REFERENCE = {10_000: "2-3 min", 100_000: "15-20 min (2-3 h with 100 trials)"}


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


def sized_config(config: Path, rows: int, folder: Path) -> Path:
    """The config with its synthetic fleet grown (or shrunk) to about `rows` readings."""
    data = yaml.safe_load(config.read_text())
    synthetic = data["source"]["synthetic"]
    per_device = synthetic["days"] * 24 * 60 / synthetic["sample_minutes"]
    synthetic["n_devices"] = max(4, round(rows / per_device))
    data["data"] = {**data.get("data", {}), "min_rows": min(1000, rows)}
    path = folder / f"rows_{rows}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def by_size(config: Path, sizes: list[int], n_trials: int | None) -> None:
    """The six steps at each fleet size: wall time per step and the peak memory."""
    extra = ["--n-trials", str(n_trials)] if n_trials else []
    results = []
    for rows in sizes:
        with tempfile.TemporaryDirectory() as store:
            env = {
                **os.environ,
                "MLFLOW_TRACKING_URI": f"sqlite:///{store}/mlflow.db",
                "PYTHONPATH": str(REPO / "src"),
            }
            env.pop("MLFLOW_RUN_ID", None)
            sized = sized_config(config, rows, Path(store))
            timed = {
                step: run_step(step, sized, extra if step == "tune" else [], env, store)
                for step in STEPS
            }
            results.append((rows, timed))
            print(f"{rows:,} rows: {sum(t for t, _ in timed.values()):.0f} s", file=sys.stderr)
    trials = n_trials or yaml.safe_load(config.read_text())["tuning"]["n_trials"]
    print(
        f"config: {config.name}, trials: {trials}   python {sys.version.split()[0]}   "
        f"cores: {os.cpu_count()}"
    )
    print(
        "| rows | " + " | ".join(f"{s} s" for s in STEPS) + " | total | peak RSS GiB | i7 (brief) |"
    )
    print("|" + "---|" * (len(STEPS) + 4))
    for rows, timed in results:
        total = sum(t for t, _ in timed.values())
        peak = max(p for _, p in timed.values()) / 1024
        cells = " | ".join(f"{timed[s][0]:.1f}" for s in STEPS)
        print(
            f"| {rows:,} | {cells} | {total / 60:.1f} min | {peak:.2f} | "
            f"{REFERENCE.get(rows, '-')} |"
        )
    for rows, timed in results:
        peaks = ", ".join(f"{s} {timed[s][1] / 1024:.2f}" for s in STEPS)
        print(f"peak RSS GiB by step at {rows:,} rows: {peaks}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "default.yaml")
    parser.add_argument("--n-trials", type=int, default=None)
    parser.add_argument("--rows", type=int, nargs="+", default=None, help="fleet sizes")
    args = parser.parse_args()
    config = args.config.resolve()
    if args.rows:
        by_size(config, args.rows, args.n_trials)
        return
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
        variant["gates"] = {**variant.get("gates", {}), "max_noise_auc_drop": None}
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
