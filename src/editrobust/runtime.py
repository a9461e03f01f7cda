"""What every workflow script does first: log to the rule's log file and pin the thread count."""

from __future__ import annotations

import json
import logging
import os
import sys


def setup_job(snakemake) -> logging.Logger:
    """Send stderr (tracebacks, progress bars) and logging to the rule's `log:` file and use the
    rule's thread count for torch."""
    if snakemake.log:
        sys.stderr = open(snakemake.log[0], "w", buffering=1)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    threads = max(1, int(snakemake.threads))
    # Scripts that never touch torch (scoring, tables) should not pay for importing it.
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    log = logging.getLogger(f"editrobust.{snakemake.rule}")
    log.info("rule %s, wildcards %s, %d thread(s)", snakemake.rule, dict(snakemake.wildcards), snakemake.threads)
    return log


def param_json(snakemake, name: str):
    """A config slice passed as a canonical JSON string param (see editrobust.config.canonical)."""
    return json.loads(getattr(snakemake.params, name))
