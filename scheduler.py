"""Retrain and monitor a fleet of tenants, each on the schedule in its config.

    python scheduler.py --configs tenants/                 # every *.yaml in tenants/
    python scheduler.py --config a.yaml --config b.yaml --tenant a
    python scheduler.py --configs tenants/ --run-now       # retrain each once now, then exit

Thin on purpose: locks, retries, catch-up, monitoring and the loop live in pdmflow.scheduling;
the work is the same `pdmflow main` / `pdmflow monitor` a data scientist runs.
Exit status: 0 (serving: stopped by SIGTERM/SIGINT); 2 a config failed to load, an unknown
--tenant, bad options; with --run-now the worst tenant's: 3 rejected by gates, 75 another
process held a tenant's lock, anything else the pipeline's failure.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

# Runs from a checkout without installing, like the MLproject commands do.
sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from pdmflow.errors import ConfigError  # noqa: E402
from pdmflow.scheduling import DEFAULT_STATE_DIR, Fleet, FleetSettings, load_tenants  # noqa: E402


def _parser() -> argparse.ArgumentParser:
    defaults = FleetSettings()
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", action="append", default=[], help="a tenant YAML (repeatable)")
    parser.add_argument("--configs", metavar="DIR", help="every *.yaml in DIR is a tenant")
    parser.add_argument(
        "--tenant",
        action="append",
        default=[],
        metavar="ID",
        help="only this tenant_id (repeatable); default: every tenant given",
    )
    parser.add_argument(
        "--state-dir",
        default=None,
        help=f"locks/<tenant>.lock and scheduler/state.json go here (default {DEFAULT_STATE_DIR}"
        "; the state file: $PDMFLOW_SCHEDULER_STATE if set)",
    )
    parser.add_argument(
        "--retries", type=int, default=defaults.retries, help="extra attempts after a failed run"
    )
    parser.add_argument(
        "--backoff-seconds",
        type=float,
        default=defaults.backoff_seconds,
        help="first retry delay; doubles each attempt",
    )
    parser.add_argument("--n-trials", type=int, default=None, help="override tuning.n_trials")
    parser.add_argument(
        "--pdmflow-command",
        default=None,
        help="how to run the pdmflow CLI, e.g. 'nice -n 10 python -m pdmflow.cli' "
        "(default: this Python's -m pdmflow.cli)",
    )
    parser.add_argument(
        "--run-now",
        action="store_true",
        help="retrain every selected tenant once now; exit with the worst status",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.retries < 0 or args.backoff_seconds < 0:
        parser.error("--retries and --backoff-seconds must not be negative")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        tenants = load_tenants(args.config, args.configs, args.tenant)
    except ConfigError as error:
        print(f"scheduler: error: {error}", file=sys.stderr)
        return error.exit_code
    command = args.pdmflow_command
    settings = FleetSettings(
        retries=args.retries,
        backoff_seconds=args.backoff_seconds,
        n_trials=args.n_trials,
        state_dir=args.state_dir,
        pdmflow_command=tuple(shlex.split(command)) if command else FleetSettings().pdmflow_command,
    )
    if args.run_now:
        return Fleet(tenants, settings, mode="run-now").run_now()
    return Fleet(tenants, settings).serve_forever()


if __name__ == "__main__":
    sys.exit(main())
