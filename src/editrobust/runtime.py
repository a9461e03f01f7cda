"""What every workflow script does first: log to the rule's log file, pin the thread count, and
read its device and config slices the one way every rule passes them."""

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
    resources = getattr(snakemake, "resources", None)
    if resources is not None and "gpu" in resources.keys() and getattr(snakemake.params, "device", None) is None:
        # the ReFACT statistic once held the gpu token while running on the CPU this way
        raise RuntimeError(f"rule {snakemake.rule} holds the `gpu` resource but passes no `device` param "
                           "(add `device=R.device` to its params, as every torch rule has)")
    log = logging.getLogger(f"editrobust.{snakemake.rule}")
    log.info("rule %s, wildcards %s, %d thread(s)", snakemake.rule, dict(snakemake.wildcards), snakemake.threads)
    return log


def job_device(snakemake) -> str:
    """The torch device of a job: its rule's `device` param (editrobust.workflow.Rules.device),
    resolved (auto -> cuda, mps or cpu). A rule that runs torch without passing it is an error:
    it would hold the `gpu` token and run on the CPU."""
    requested = getattr(snakemake.params, "device", None)
    if requested is None:
        raise RuntimeError(f"rule {snakemake.rule} runs torch models but passes no `device` param "
                           "(add `device=R.device` to its params, as every torch rule has)")
    from editrobust.devices import pick_device

    return str(pick_device(requested))


def param_json(snakemake, name: str):
    """A config slice passed as a canonical JSON string param (see editrobust.config.canonical)."""
    return json.loads(getattr(snakemake.params, name))
