from pathlib import Path

from editrobust.runtime import job_device, param_json, setup_job
from editrobust.sampling import sample_promptset

setup_job(snakemake)
sample_promptset(
    variant_dir=Path(snakemake.input.model[-1]).parent,  # the chain's last variant.json (base first)
    promptset_csv=snakemake.input.promptset,
    promptset=param_json(snakemake, "promptset"),
    sampling=param_json(snakemake, "sampling"),
    out_dir=Path(snakemake.output[0]).parent,
    device=job_device(snakemake),
)
