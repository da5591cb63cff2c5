"""Serving latency on the paths serving code waits on, next to the bare model, in one process.

    python bench/serving.py [--configs configs/default.yaml bench/configs/wide.yaml]

For each config, trains its model without tuning (ingest, features, train) into a temp SQLite
store, loads it as serving does (`FailureScorer.load`, which holds `mlflow.pyfunc.load_model`),
and times on the test devices:
- native: the LightGBM booster released with the model (its explainer copy), one row;
- bare ONNX: an ONNX Runtime session on the model's graph, one row;
- (1) pyfunc: `mlflow.pyfunc` model `.predict`, one row;
- (2) device: `FailureScorer.score_telemetry` for one device from the raw readings it needs;
- (3) batch: one `score_telemetry` call for 1,000 devices (per device in the ratio column);
- (4) REST: `pdmflow serve` in its own process, one device's raw readings POSTed to /score as
  JSON (built beforehand) over loopback HTTP, answer parsed: what a remote caller waits on.
Prints p50/p99 in ms and each p50 as a multiple of the bare ONNX session's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BATCH_DEVICES = 1000


@contextlib.contextmanager
def rest_server(config_path: Path, model_uri: str) -> Iterator[str]:
    """`pdmflow serve` on a free loopback port, as a user starts it; yields its base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "pdmflow.cli", "serve", "--config", str(config_path),
               "--model-uri", model_uri, "--port", str(port)]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"pdmflow serve exited: {server.stderr.read().decode()[-500:]}")
            try:
                urllib.request.urlopen(f"{base}/ping", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


def as_json(frame):  # noqa: ANN001, ANN201 (a DataFrame in, the request's "split" shape out)
    text = frame.assign(**{c: frame[c].astype(str) for c in frame.select_dtypes("datetime")})
    return {"columns": list(text.columns), "data": text.to_numpy().tolist()}


def measure(config_path: Path, repeats: int) -> tuple[list[tuple[str, float, float, float]], int]:
    import mlflow
    import numpy as np

    from pdmflow.artifacts import read_dataset, read_features
    from pdmflow.config import load_config
    from pdmflow.evaluation.latency import fleet_of, recent_readings, timed_ms
    from pdmflow.models.onnx import onnx_predict, onnx_session
    from pdmflow.serving import FailureScorer
    from pdmflow.steps.features import run_features
    from pdmflow.steps.ingest import run_ingest
    from pdmflow.steps.train import MODEL_URI_TAG, run_train
    from pdmflow.tracking import step_input

    config = load_config(config_path)
    run_ingest(config)
    features_uri = run_features(config, "latest")
    train_run = mlflow.get_run(run_train(config, features_uri, "none"))
    scorer = FailureScorer.load(train_run.data.tags[MODEL_URI_TAG])
    spec = scorer.spec
    tables, _ = read_features(features_uri)
    test = tables["test"]
    rows = test[spec.feature_names].to_numpy(np.float32)
    one_row = [rows[i % len(rows)][None, :] for i in range(repeats)]
    one_row_as_called = [row.astype(scorer.input_dtype) for row in one_row]  # float64
    session = onnx_session(mlflow.onnx.load_model(scorer.model_uri))
    booster = scorer.explainer.estimator
    telemetry, events = read_dataset(
        step_input(mlflow.get_run(features_uri.split("/")[1]), "data_uri")
    )
    telemetry = telemetry[telemetry[spec.device_column].isin(test[spec.device_column].unique())]
    events = events if spec.time_since_failure else None
    readings = recent_readings(telemetry, spec)
    names = list(readings)
    own_events = {
        n: events[events[spec.device_column] == n] if events is not None else None for n in names
    }
    fleet, fleet_events = fleet_of(readings, events, spec, BATCH_DEVICES)

    def device(i: int) -> object:
        name = names[i % len(names)]
        return scorer.score_telemetry(readings[name], own_events[name])

    bodies = [
        json.dumps(
            {
                "telemetry": as_json(readings[name]),
                **({"events": as_json(own_events[name])} if own_events[name] is not None else {}),
            }
        ).encode()
        for name in names
    ]

    def rest(base: str, i: int) -> object:
        request = urllib.request.Request(
            f"{base}/score", bodies[i % len(bodies)], {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read())

    with rest_server(config_path, scorer.model_uri) as base:
        rest_timings = timed_ms(lambda i: rest(base, i), repeats)

    timings = {
        "native LightGBM booster, one row": timed_ms(
            lambda i: booster.predict(one_row[i]), repeats
        ),
        "bare ONNX session, one row": timed_ms(
            lambda i: onnx_predict(session, one_row[i]), repeats
        ),
        "(1) pyfunc predict, one row": timed_ms(
            lambda i: scorer.model.predict(one_row_as_called[i]), repeats
        ),
        "(2) score_telemetry, one device": timed_ms(device, repeats),
        f"(3) score_telemetry, {BATCH_DEVICES:,} devices": timed_ms(
            lambda i: scorer.score_telemetry(fleet, fleet_events), 5
        ),
        "(4) pdmflow serve REST, one device": rest_timings,
    }
    print(
        f"{config_path.name}: {len(spec.feature_names)} features, "
        f"{len(readings[names[0]])} readings per device",
        file=sys.stderr,
    )
    bare = float(np.percentile(timings["bare ONNX session, one row"], 50))
    table = []
    for name, values in timings.items():
        p50, p99 = (float(np.percentile(values, q)) for q in (50, 99))
        per_call = p50 / BATCH_DEVICES if name.startswith("(3)") else p50
        table.append((name, p50, p99, per_call / bare))
    return table, len(spec.feature_names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--configs",
        nargs="+",
        type=Path,
        default=[REPO / "configs" / "default.yaml", REPO / "bench" / "configs" / "wide.yaml"],
    )
    parser.add_argument("--repeats", type=int, default=300)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as store:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store}/mlflow.db"
        os.chdir(store)
        for config in args.configs:
            results.append((config, *measure(config.resolve(), args.repeats)))
    print(f"python {sys.version.split()[0]}   cores: {os.cpu_count()}   repeats: {args.repeats}")
    print("| model | path | p50 ms | p99 ms | p50 / bare ONNX |")
    print("|---|---|---|---|---|")
    for config, table, features in results:
        for name, p50, p99, ratio in table:
            unit = " (per device)" if name.startswith("(3)") else ""
            print(
                f"| {config.stem}, {features} features | {name} | {p50:.3f} | {p99:.3f} | "
                f"{ratio:.1f}x{unit} |"
            )


if __name__ == "__main__":
    main()
