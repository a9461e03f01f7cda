"""Seed planning of one table from its score files; write results/tables/power/<table>.csv and .md."""

from editrobust.runtime import param_json, setup_job
from editrobust.tables.power import write_power

log = setup_job(snakemake)
spec = param_json(snakemake, "table")
out = snakemake.output
power = write_power(spec, list(snakemake.input), param_json(snakemake, "power"), out.csv, out.md,
                    name=snakemake.wildcards.table)
log.info("seed planning of table %s (%s): %d cells", snakemake.wildcards.table, spec["kind"], len(power))
