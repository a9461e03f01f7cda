from editrobust.devices import pick_device
from editrobust.runtime import param_json, setup_job
from editrobust.scoring import embed_images

log = setup_job(snakemake)
spec = param_json(snakemake, "clip_model")
device = pick_device(snakemake.params.device)
embed_images(snakemake.input.index, spec, snakemake.output[0], device=str(device))
log.info("embedded %s with %s on %s", snakemake.input.index, spec["name"], device)
