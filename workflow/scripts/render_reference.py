from editrobust.runtime import param_json, setup_job
from editrobust.scoring import render_reference

log = setup_job(snakemake)
n = render_reference(snakemake.output[0], param_json(snakemake, "reference"))
log.info("rendered %d toy reference images", n)
