"""Daily retraining, unattended: `python scheduler.py` (02:00 UTC) or `--run-now` (once).

Thin on purpose: the lock, retries and loop live in pdmflow.scheduling; the pipeline is the same
`main` entry point a data scientist runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

# Runs from a checkout without installing, like the MLproject commands do.
sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from pdmflow.scheduling import Retrainer, RetrainSettings  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    defaults = RetrainSettings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=defaults.config, help="tenant YAML to retrain")
    parser.add_argument("--at", default=defaults.at, help="daily time, HH:MM (default 02:00)")
    parser.add_argument(
        "--timezone", default=defaults.timezone, help="IANA name, e.g. Europe/Berlin"
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
    parser.add_argument("--lock-file", default=defaults.lock_file)
    parser.add_argument("--n-trials", type=int, default=None, help="override tuning.n_trials")
    parser.add_argument(
        "--run-now", action="store_true", help="run one retrain now and exit with its status"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    retrainer = Retrainer(
        RetrainSettings(
            config=args.config,
            at=args.at,
            timezone=args.timezone,
            retries=args.retries,
            backoff_seconds=args.backoff_seconds,
            lock_file=args.lock_file,
            n_trials=args.n_trials,
        )
    )
    if args.run_now:
        return retrainer.retrain()
    return retrainer.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
