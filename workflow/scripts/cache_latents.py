from pathlib import Path

from editrobust.finetune.latents import cache_dataset_latents
from editrobust.runtime import param_json, setup_job
from editrobust.devices import pick_device

log = setup_job(snakemake)
cache = cache_dataset_latents(
    Path(snakemake.input.base).parent,
    snakemake.wildcards.dataset,
    param_json(snakemake, "dataset"),
    snakemake.output[0],
    device=str(pick_device(snakemake.params.device)),
)
log.info("cached %d rows at resolution %d", len(cache), cache.meta["resolution"])
