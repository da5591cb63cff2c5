"""One command line for every step; MLproject's entry points call it.

    python -m pdmflow.cli <step> --config configs/default.yaml [step options]

Exit status: 0 done (for promote/main: released), 2 bad input or config (one line on stderr;
for rollback also: nothing to roll back to, the registry unchanged),
3 the model was evaluated but failed a release gate (registered, not promoted),
4 the tracking server stayed unreachable for tracking.max_wait_seconds, or went away during
the step, or the SQL source's database during ingest (retryable: the scheduler retries;
`pdmflow main --resume` continues a pipeline from its first unfinished step),
5 (monitor) drift or a drop in the Production model's recent accuracy passed monitoring.*:
retraining is advised,
6 an artifact could not be written (store full, read-only or forbidden; the path is named).
Errors are one line on stderr; `pdmflow --debug <step> ...` adds the traceback.
"""

from __future__ import annotations

import argparse
import sys
import traceback

from pdmflow.config import DEFAULT_CONFIG_PATH, TenantConfig, load_config
from pdmflow.errors import ConfigError, PdmflowError

# The steps that may run under a pipeline run opened elsewhere (--parent-run-id).
PIPELINE_STEPS = ("ingest", "features", "tune", "train", "evaluate", "promote")
# MLproject's defaults for score's optional inputs: the same as leaving the option out.
SOURCE_CONFIG = "source-config"
UNSET = ("", "none", "production")


def _flag(text: str) -> bool:
    if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
        raise argparse.ArgumentTypeError(f"expected true or false, got '{text}'")
    return text.lower() in ("true", "1", "yes")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pdmflow", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--debug", action="store_true", help="print the traceback with an error's one line"
    )
    steps = parser.add_subparsers(dest="step", required=True)

    def step(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = steps.add_parser(name, help=help_text)
        sub.add_argument("--config", default=DEFAULT_CONFIG_PATH, help="tenant YAML")
        if name in PIPELINE_STEPS:
            sub.add_argument(
                "--parent-run-id",
                default=None,
                help="run as a child of this pipeline run (`pipeline-run open` prints it) "
                "and record the step's output on it",
            )
        return sub

    step("ingest", "read, validate and log the tenant's telemetry and failure events")
    step("features", "label, build features, split by time").add_argument(
        "--data-uri", default="latest", help="dataset URI from ingest (default: latest run)"
    )
    for name, help_text in (
        ("tune", "Optuna study over LightGBM parameters"),
        ("main", "all six steps under one parent run"),
        ("tune-worker", "join a tune run's Optuna study (tuning.storage) from another process"),
    ):
        sub = step(name, help_text)
        sub.add_argument("--n-trials", type=int, default=None, help="default: tuning.n_trials")
        sub.add_argument(
            "--timeout", type=float, default=None, help="seconds; default: tuning.timeout_seconds"
        )
        if name == "tune":
            sub.add_argument(
                "--features-uri",
                default="latest",
                help="features URI (runs:/<id>/features; default: the latest features run)",
            )
        if name in ("tune", "main"):
            sub.add_argument(
                "--workers",
                type=int,
                default=1,
                help="processes tuning one study (needs tuning.storage for more than 1)",
            )
        if name == "main":
            sub.add_argument(
                "--reason", default=None, help="why this retrain runs (tag pdmflow.retrain_reason)"
            )
            sub.add_argument(
                "--resume",
                nargs="?",
                const="true",
                default="false",
                choices=("true", "false", "auto"),
                help="continue the latest pipeline run from its first unfinished step "
                "(auto: only when it did not finish, else start afresh)",
            )
            sub.add_argument(
                "--resume-since",
                default=None,
                help="with --resume auto: continue only a pipeline run started at or after "
                "this ISO time (the scheduler passes its retrain's start)",
            )
        if name == "tune-worker":
            sub.add_argument("--study", required=True, help="study name (the tune run prints it)")
    train = step("train", "fit LightGBM, export and check ONNX, log the model")
    train.add_argument(
        "--features-uri",
        default="latest",
        help="features URI (runs:/<id>/features; default: the latest features run)",
    )
    train.add_argument(
        "--tune-run-id",
        default="latest",
        help="'latest' tune run, a run id, or 'none' for the config's params",
    )
    step("evaluate", "test-period metrics, plots, latency, champion comparison").add_argument(
        "--train-run-id", default="latest", help="train run to evaluate (default: latest run)"
    )
    step("promote", "check the gates, register, release").add_argument(
        "--evaluate-run-id",
        default="latest",
        help="evaluate run whose gates decide (default: latest run)",
    )
    pipeline = step(
        "pipeline-run",
        "open or close a pipeline (main) run whose steps run as separate commands (Airflow)",
    )
    pipeline.add_argument(
        "action",
        choices=("open", "close"),
        help="open: start it, print its id; close: record the outcome as main does, end it",
    )
    pipeline.add_argument("--run-id", default=None, help="close: the id `open` printed")
    pipeline.add_argument(
        "--reason", default=None, help="open: why it runs (tag pdmflow.retrain_reason)"
    )
    step("status", "the Production (@champion) version of the tenant's model and its history")
    rollback = step("rollback", "put the previous (or a named) released version back in Production")
    rollback.add_argument(
        "--to-version", default=None, help="an Archived version (default: the previous release)"
    )
    rollback.add_argument("--reason", required=True, help="why: kept on both versions")
    step("monitor", "drift and recent accuracy of the Production model; exit 5: retrain")
    score = step("score", "score a fleet's telemetry in batch into a Parquet or CSV file")
    score_input = score.add_mutually_exclusive_group(required=True)
    score_input.add_argument(
        "--input",
        help=f"telemetry file (.csv, .json, .jsonl, .parquet); '{SOURCE_CONFIG}' = --source-config",
    )
    score_input.add_argument(
        "--source-config", action="store_true", help="read the telemetry from the config's source"
    )
    score.add_argument("--events", default=None, help="failure events file, with --input")
    score.add_argument("--output", required=True, help="scores file: .parquet or .csv")
    score.add_argument(
        "--model-uri", default=None, help="default: models:/<registered_model_name>/Production"
    )
    score.add_argument(
        "--all-rows",
        nargs="?",
        const="true",
        default="false",
        type=_flag,
        help="score every reading with full history (a backfill), not only each latest one",
    )
    score.add_argument(
        "--rows-per-chunk", type=int, default=100_000, help="whole devices, ~this many rows a chunk"
    )
    serve = step("serve", "a REST endpoint scoring raw telemetry, with sensor health")
    serve.add_argument(
        "--model-uri", default=None, help="default: models:/<registered_model_name>/Production"
    )
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    serve.add_argument("--port", type=int, default=5002, help="port (default 5002)")
    serve.add_argument(
        "--refresh-seconds",
        type=float,
        default=60.0,
        help="how often a stage or alias URI is re-resolved, so a release is served (60)",
    )
    registry = step("registry", "registry housekeeping: migrate a model from stages to aliases")
    registry.add_argument("action", choices=["migrate"], help="migrate: see --to")
    registry.add_argument(
        "--to",
        required=True,
        choices=["aliases"],
        help="aliases: @production/@champion from the current stages, stages cleared",
    )
    reproduce = steps.add_parser(
        "reproduce", help="rebuild a registered version from its recorded inputs and compare"
    )
    reproduce.add_argument("--model", required=True, help="registered model name")
    reproduce.add_argument("--version", required=True, help="registered version")
    return parser


def _print_status(config: TenantConfig) -> None:
    from mlflow import MlflowClient, get_tracking_uri

    from pdmflow.registry import (
        ALIASES,
        CHAMPION_ALIAS,
        production_version,
        release_history,
        release_lock,
        release_problems,
        repair_release,
        serving_uri,
    )
    from pdmflow.scheduling import scheduler_status_lines

    name, mode = config.registered_model_name, config.registry.mode
    if release_problems(name, mode):  # a release killed part-way: put it right, say so
        with release_lock(name):
            for repaired in repair_release(name, mode):
                print(repaired)
    version = production_version(name, mode)
    if version is None:
        print(f"{name}: no Production version yet (tracking: {get_tracking_uri()})")
    else:
        champion = MlflowClient().get_model_version_by_alias(name, CHAMPION_ALIAS).version
        where = "@production" if mode == ALIASES else "Production"
        print(f"{name}: {where} version {version.version} (@{CHAMPION_ALIAS} -> {champion})")
        print(f"  load it: mlflow.pyfunc.load_model('{serving_uri(name, mode)}')")
        print(
            f"  browse runs: make ui, then open http://127.0.0.1:5000 "
            f"(tracking: {get_tracking_uri()})"
        )
    history = release_history(name)
    if history:
        print("release history (oldest first):")
        print(f"  {'version':>7}  {'when (UTC)':<29}  {'event':<11}  {'who':<12}  reason")
        for e in history:
            print(
                f"  {e['version']:>7}  {e['when']:<29}  {e['event']:<11}  {e['who']:<12}  "
                f"{e['reason']}"
            )
    # Only when a scheduler state file exists (default path, or $PDMFLOW_SCHEDULER_STATE).
    for line in scheduler_status_lines(config.tenant_id):
        print(line)


def _pipeline_step_output(args: argparse.Namespace, config: TenantConfig) -> str:
    """Run one of the six steps; its output (a URI, a run id, promote's version)."""
    if args.step == "ingest":
        from pdmflow.steps.ingest import run_ingest

        return run_ingest(config)
    if args.step == "features":
        from pdmflow.steps.features import run_features

        return run_features(config, args.data_uri)
    if args.step == "tune":
        from pdmflow.steps.tune import run_tune

        return run_tune(config, args.features_uri, args.n_trials, args.timeout, args.workers)
    if args.step == "train":
        from pdmflow.steps.train import run_train

        return run_train(config, args.features_uri, args.tune_run_id)
    if args.step == "evaluate":
        from pdmflow.steps.evaluate import run_evaluate

        return run_evaluate(config, args.train_run_id)
    from pdmflow.steps.promote import run_promote

    return run_promote(config, args.evaluate_run_id)


def _run_pipeline_step(args: argparse.Namespace, config: TenantConfig) -> None:
    """Run the step, print its output for the next step (promote prints its own line); under
    --parent-run-id as that run's child, with the step's run and output recorded on it."""
    from pdmflow.errors import GateFailure
    from pdmflow.tracking import record_step, step_entry, use_pipeline_run

    parent = use_pipeline_run(config, args.parent_run_id)
    try:
        output = _pipeline_step_output(args, config)
    except GateFailure:
        if parent is not None:  # promote decided: its run is on record, not its output
            record_step(parent.info.run_id, args.step, step_entry(parent, args.step, None))
        raise
    finally:
        use_pipeline_run(config, None)
    if parent is not None:
        record_step(parent.info.run_id, args.step, step_entry(parent, args.step, output))
    if args.step != "promote":
        print(output)


def run(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        from pdmflow.models.threads import estimator_threads

        estimator_threads()  # a bad PDMFLOW_THREADS stops here, before any run starts
        if args.step == "reproduce":
            from pdmflow.steps.reproduce import run_reproduce

            return run_reproduce(args.model, args.version)
        config = load_config(args.config)
        from pdmflow.tracking import use_account, wait_for_tracking_server

        use_account(config)
        wait_for_tracking_server(config, args.step)
        # Each step's module imported in its branch, late: `--help` and config errors answer
        # without loading MLflow and LightGBM, and a step loads only what it uses (ingest
        # without ONNX, SHAP and matplotlib: seconds per process).
        if args.step in PIPELINE_STEPS:
            _run_pipeline_step(args, config)
        elif args.step == "pipeline-run":
            from pdmflow.steps.pipeline import close_pipeline_run, open_pipeline_run

            if args.action == "open":
                print(open_pipeline_run(config, args.reason))
            elif args.run_id is None:
                raise ConfigError("pipeline-run close: --run-id is required (the id open printed)")
            else:
                print(close_pipeline_run(config, args.run_id))
        elif args.step == "tune-worker":
            from pdmflow.steps.tune import run_tune_worker

            run_tune_worker(config, args.study, args.n_trials, args.timeout)
        elif args.step == "monitor":
            from pdmflow.steps.monitor import run_monitor

            if run_monitor(config).retrain:
                return 5
        elif args.step == "score":
            from pdmflow.steps.score import run_score

            from_source = args.source_config or args.input == SOURCE_CONFIG
            run_score(
                config,
                args.output,
                input_path=None if from_source else args.input,
                events_path=None if (args.events or "").lower() in UNSET else args.events,
                model_uri=None if (args.model_uri or "").lower() in UNSET else args.model_uri,
                all_rows=args.all_rows,
                rows_per_chunk=args.rows_per_chunk,
            )
        elif args.step == "registry":
            from pdmflow.registry.migrate import run_migrate

            run_migrate(config)
        elif args.step == "serve":
            from pdmflow.serving.rest import serve

            model_uri = None if (args.model_uri or "").lower() in UNSET else args.model_uri
            serve(config, model_uri, args.host, args.port, args.refresh_seconds)
        elif args.step == "status":
            _print_status(config)
        elif args.step == "rollback":
            import mlflow

            from pdmflow.registry import release_lock, rollback
            from pdmflow.tracking import step_run

            name = config.registered_model_name
            # "previous" is MLproject's default for the parameter: the previous release.
            target = None if args.to_version in (None, "previous") else args.to_version
            # A run in the tenant's experiment records the rollback (and adopts mlflow run's);
            # the release lock keeps a promote from releasing in the middle of it.
            with step_run(config, "rollback"), release_lock(name):
                restored, archived = rollback(name, args.reason, target, config.registry.mode)
                mlflow.log_params(
                    {
                        "restored_version": restored,
                        "archived_version": archived,
                        # not "reason": mlflow run logs its own, shell-quoted, entry-point params
                        "rollback_reason": args.reason,
                    }
                )
            where = "@production" if config.registry.mode == "aliases" else "Production"
            print(
                f"{name}: version {restored} is {where} again (@champion); "
                f"version {archived} archived ({args.reason})"
            )
        else:
            from pdmflow.steps.pipeline import run_pipeline

            version = run_pipeline(
                config,
                args.n_trials,
                args.timeout,
                workers=args.workers,
                reason=args.reason,
                resume=args.resume,
                resume_since=args.resume_since,
            )
            print(f"pipeline released {config.registered_model_name} version {version}")
    except PdmflowError as error:
        if args.debug:
            traceback.print_exc()
        step = getattr(error, "step", None) or args.step
        print(f"pdmflow {step}: error: {error}", file=sys.stderr)
        return error.exit_code
    except Exception as error:
        # A tracking server lost, or an artifact write refused, outside any step's run (a
        # lookup before it) is one line too.
        from pdmflow.tracking import as_pdmflow_error

        known = as_pdmflow_error(error, args.step)
        if known is None:
            raise
        if args.debug:
            traceback.print_exc()
        print(f"pdmflow {args.step}: error: {known}", file=sys.stderr)
        return known.exit_code
    return 0


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
