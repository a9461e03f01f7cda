from editrobust.models.base import snapshot_hub_model
from editrobust.runtime import param_json, setup_job

setup_job(snakemake)
snapshot_hub_model(snakemake.wildcards.model, param_json(snakemake, "model"), snakemake.output[0])
