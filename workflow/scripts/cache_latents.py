from pathlib import Path

from editrobust.devices import pick_device
from editrobust.finetune import cache_latents
from editrobust.runtime import param_json, setup_job

log = setup_job(snakemake)
cache = cache_latents(
    Path(snakemake.input.base).parent,
    snakemake.wildcards.dataset,
    param_json(snakemake, "dataset"),
    snakemake.output[0],
    device=str(pick_device(snakemake.params.device)),
)
log.info("cached %d rows at resolution %d", len(cache), cache.meta["resolution"])
