from pathlib import Path

from editrobust.finetune import cache_latents
from editrobust.runtime import job_device, param_json, setup_job

log = setup_job(snakemake)
cache = cache_latents(
    Path(snakemake.input.base).parent,
    snakemake.wildcards.dataset,
    param_json(snakemake, "dataset"),
    snakemake.output[0],
    device=job_device(snakemake),
)
log.info("cached %d rows at resolution %d", len(cache), cache.meta["resolution"])
