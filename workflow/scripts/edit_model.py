from pathlib import Path

from editrobust.editors import edit_model
from editrobust.runtime import job_device, param_json, setup_job

setup_job(snakemake)
edit_model(
    Path(snakemake.input.chain[-1]).parent,  # the parent's chain, base first
    snakemake.wildcards.editor,
    param_json(snakemake, "editor"),
    Path(snakemake.output[0]).parent,
    inputs={name: path for name, path in snakemake.input.items() if name != "chain"},
    resolved=param_json(snakemake, "resolved"),
    sampling=param_json(snakemake, "sampling"),
    device=job_device(snakemake),
)
