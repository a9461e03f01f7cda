from editrobust.cost import estimate, render
from editrobust.runtime import setup_job

log = setup_job(snakemake)
table = render(estimate(snakemake.config))
print(table, flush=True)
log.info("\n%s", table)
