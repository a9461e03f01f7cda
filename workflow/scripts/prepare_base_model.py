from pathlib import Path

from editrobust.models.base import prepare_base_model
from editrobust.runtime import job_device, param_json, setup_job

setup_job(snakemake)
prepare_base_model(
    snakemake.wildcards.model,
    param_json(snakemake, "model"),
    out_dir=Path(snakemake.output[0]).parent,
    snapshot_json=snakemake.input.get("snapshot"),
    device=job_device(snakemake),
)
