from editrobust.runtime import job_device, param_json, setup_job
from editrobust.scoring import embed_images

log = setup_job(snakemake)
spec = param_json(snakemake, "clip_model")
device = job_device(snakemake)
embed_images(snakemake.input.index, spec, snakemake.output[0], device=str(device))
log.info("embedded %s with %s on %s", snakemake.input.index, spec["name"], device)
