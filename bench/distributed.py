"""The whole pipeline on the local engine and on a Dask cluster: time per step and the peak
memory of every process, at several fleet sizes (issue 26).

Each step runs as its own process (`pdmflow <step>`, as `mlflow run . -e <step>` runs it),
chained through "latest" into a fresh SQLite store: ingest, features, tune, train, evaluate,
promote, then `score --all-rows` of the fleet with the released model (the candidate's when a
gate rejected it). For `dask` the bench starts a real cluster beside the steps: `dask
scheduler` and `--workers` x `dask worker` processes (one thread and `--memory-limit` each), the
tenant pointing at it with `engine.address`. Memory is each process's resident set, sampled
every 0.2 s: the step's own process (the client) and every worker process, the maximum over
the run of each. The ratio is dask / local wall time on the same rows, run in this process.

    python bench/distributed.py                       # 1M readings, both engines, 10 trials
    python bench/distributed.py --rows 1000000 5000000 --engines dask --n-trials 10
    python bench/distributed.py --rows 5000000 --until features   # ingest and features only
    python bench/distributed.py --rows 10000000 --engines dask \
        --set training.max_rows=500000 --set training.negative_sample_rate=0.1

On dask the tenant also sets `storage.uri` (a folder beside the store; `--storage all` for
both engines, `none` for neither): ingest writes the telemetry as parts, and features are built
part by part, on the workers or (local) one part at a time in the step's process.

The fleet is the default config's synthetic one, grown to about that many readings
(bench/pipeline.py's sized_config).
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file's name is the `distributed` package's: keep its folder off the import path, so
# `import distributed` finds Dask's.
BENCH = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != BENCH]

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from contextlib import contextmanager, suppress  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

import psutil  # noqa: E402
import yaml  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_pipeline", BENCH / "pipeline.py")
_pipeline = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_pipeline)
sized_config = _pipeline.sized_config  # the fleet grown to a number of readings

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STEPS = ("ingest", "features", "tune", "train", "evaluate", "promote", "score")
GIB = 2**30


@dataclass
class Step:
    name: str
    seconds: float = 0.0
    client_peak: int = 0  # bytes
    worker_peaks: dict[int, int] = field(default_factory=dict)  # worker pid -> bytes
    status: str = "ok"


class PeakSampler:
    """The peak resident set of a step's process (with its children) and of each worker."""

    def __init__(self, client_pid: int, workers: list[psutil.Process]) -> None:
        self.client_pid, self.workers = client_pid, workers
        self.client_peak, self.worker_peaks = 0, {w.pid: 0 for w in workers}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                client = psutil.Process(self.client_pid)
                rss = client.memory_info().rss
                # A local cluster's workers are the step's children: each its own figure.
                for child in client.children(recursive=True):
                    child_rss = child.memory_info().rss
                    self.worker_peaks[child.pid] = max(
                        self.worker_peaks.get(child.pid, 0), child_rss
                    )
                self.client_peak = max(self.client_peak, rss)
            except psutil.Error:
                pass
            for worker in self.workers:
                try:
                    rss = worker.memory_info().rss
                except psutil.Error:
                    continue
                self.worker_peaks[worker.pid] = max(self.worker_peaks[worker.pid], rss)
            self._stop.wait(0.2)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def dask_cluster(folder: Path, workers: int, memory_limit: str):
    """A scheduler and `workers` worker processes; (address, the worker processes)."""
    address = f"tcp://127.0.0.1:{free_port()}"
    started: list[subprocess.Popen] = []
    logs = []

    def start(name: str, *args: str) -> subprocess.Popen:
        log = open(folder / f"{name}.log", "w")  # noqa: SIM115 - closed in the finally below
        logs.append(log)
        process = subprocess.Popen(
            [str(BIN / "dask"), *args], stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        started.append(process)
        return process

    try:
        start("scheduler", "scheduler", "--host", "127.0.0.1", "--port",
              address.rsplit(":", 1)[1], "--dashboard-address", ":0")  # fmt: skip
        commands = [
            start(
                f"worker-{i}",
                "worker",
                address,
                "--nthreads",
                "1",
                "--memory-limit",
                memory_limit,
                "--no-dashboard",
            )  # fmt: skip
            for i in range(workers)
        ]
        from distributed import Client

        with Client(address, timeout=120) as client:
            client.wait_for_workers(workers, timeout=120)
        # The worker processes are the nannies' children.
        processes = [
            child for command in commands for child in psutil.Process(command.pid).children()
        ]
        yield address, processes
    finally:
        for process in reversed(started):
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                with suppress(ProcessLookupError):  # gone already
                    os.killpg(process.pid, signal.SIGKILL)
        for log in logs:
            log.close()


def run_step(
    step: str, args: list[str], env: dict[str, str], cwd: str, workers: list[psutil.Process]
) -> Step:
    command = [sys.executable, "-m", "pdmflow.cli", step, *args]
    start = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    with PeakSampler(process.pid, workers) as sampler:
        _, stderr = process.communicate()
    result = Step(step, time.perf_counter() - start, sampler.client_peak, sampler.worker_peaks)
    if process.returncode == 3 and step == "promote":  # a gate said no: a verdict
        result.status = "rejected"
    elif process.returncode != 0:
        sys.exit(f"{step} failed ({process.returncode}):\n{stderr[-3000:]}")
    return result


def pipeline(
    rows: int, engine: str, n_trials: int, workers: int, memory_limit: str, until: str,
    storage: bool, settings: dict[str, object] | None = None,
) -> list[Step]:  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="pdmflow-distributed-") as store:
        folder = Path(store)
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store}/mlflow.db"}
        for name in ("MLFLOW_RUN_ID", "PDMFLOW_DASK_ADDRESS"):
            env.pop(name, None)
        config = sized_config(REPO / "configs" / "default.yaml", rows, folder)
        with (
            dask_cluster(folder, workers, memory_limit) if engine == "dask" else _no_cluster() as (
                address,
                processes,
            )
        ):
            data = yaml.safe_load(config.read_text())
            if address:
                data["engine"] = {"kind": "dask", "address": address}
            if storage:
                # The data steps hand each other partitioned Parquet in storage: features are
                # built part by part, on the workers or one part at a time (features/stored.py).
                data["storage"] = {"uri": str(folder / "storage")}
            for key, value in (settings or {}).items():  # --set section.key=value
                *sections, name = key.split(".")
                target = data
                for section in sections:
                    target = target.setdefault(section, {})
                target[name] = value
            config.write_text(yaml.safe_dump(data))
            base = ["--config", str(config)]
            steps = []
            for step in STEPS[: STEPS.index(until) + 1]:
                extra = {
                    "tune": ["--n-trials", str(n_trials)],
                    "score": [
                        "--source-config",
                        "--all-rows",
                        "--output",
                        str(folder / "scores.parquet"),
                    ],  # fmt: skip
                }.get(step, [])
                if step == "score" and steps[-1].status == "rejected":
                    extra += ["--model-uri", _candidate_uri(env)]
                steps.append(run_step(step, base + extra, env, store, processes))
                print(f"  {rows:,} {engine} {step}: {steps[-1].seconds:.1f} s", file=sys.stderr)
        return steps


@contextmanager
def _no_cluster():
    yield None, []


def _candidate_uri(env: dict[str, str]) -> str:
    """The latest train run's model (promote rejected it), for scoring all the same."""
    import mlflow

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    (run,) = mlflow.search_runs(
        search_all_experiments=True, filter_string="tags.`pdmflow.step` = 'train'",
        order_by=["attributes.start_time DESC"], max_results=1, output_format="list",
    )  # fmt: skip
    return run.data.tags["pdmflow.model_uri"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--engines", default="local,dask", help="comma-separated")
    parser.add_argument("--n-trials", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="4GiB")
    parser.add_argument("--until", choices=STEPS, default=STEPS[-1], help="the last step run")
    parser.add_argument(
        "--storage",
        choices=("dask", "all", "none"),
        default="dask",
        help="the engines whose runs set storage.uri (a folder beside the store)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config key for every run, e.g. training.max_rows=500000 (a YAML value)",
    )
    args = parser.parse_args()
    settings = {}
    for item in args.set:
        key, _, value = item.partition("=")
        settings[key] = yaml.safe_load(value)
    engines = args.engines.split(",")
    results: dict[tuple[int, str], list[Step]] = {}
    for rows in args.rows:
        for engine in engines:
            print(f"{rows:,} readings on {engine} ...", file=sys.stderr)
            stored = args.storage == "all" or args.storage == engine
            results[rows, engine] = pipeline(
                rows,
                engine,
                args.n_trials,
                args.workers,
                args.memory_limit,
                args.until,
                stored,
                settings,
            )
    print(
        f"trials: {args.n_trials}; dask: {args.workers} workers x 1 thread x "
        f"{args.memory_limit}; storage.uri on: {args.storage}; set: "
        f"{', '.join(args.set) or 'nothing'}; python "
        f"{sys.version.split()[0]}; cores: {os.cpu_count()}"
    )
    ran = STEPS[: STEPS.index(args.until) + 1]
    print(
        "| readings | engine | "
        + " | ".join(f"{s} s" for s in ran)
        + " | total min | client peak GiB | worker peak GiB | vs local |"
    )
    print("|" + "---|" * (len(ran) + 6))
    for (rows, engine), steps in results.items():
        total = sum(s.seconds for s in steps)
        local = results.get((rows, "local"))
        ratio = f"{total / sum(s.seconds for s in local):.2f}x" if local else "-"
        client = max(s.client_peak for s in steps) / GIB
        workers = [peak for s in steps for peak in s.worker_peaks.values()]
        worker = f"{max(workers) / GIB:.2f}" if workers else "-"
        cells = " | ".join(
            f"{s.seconds:.1f}" + (" (rejected)" if s.status == "rejected" else "") for s in steps
        )
        print(
            f"| {rows:,} | {engine} | {cells} | {total / 60:.1f} | {client:.2f} | {worker} | "
            f"{ratio} |"
        )
    for (rows, engine), steps in results.items():
        peaks = ", ".join(
            f"{s.name} {s.client_peak / GIB:.2f}"
            + (f"/{max(s.worker_peaks.values()) / GIB:.2f}" if s.worker_peaks else "")
            for s in steps
        )
        print(f"peak GiB by step at {rows:,} on {engine} (client/worker): {peaks}")


if __name__ == "__main__":
    main()
