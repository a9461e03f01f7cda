"""Build one table from its score files; write .csv, .md and .tex (each atomically)."""

from editrobust.runtime import param_json, setup_job
from editrobust.tables import make_table

log = setup_job(snakemake)
spec = param_json(snakemake, "table")
out = snakemake.output
table = make_table(spec, list(snakemake.input), out.csv, out.md, out.tex, name=snakemake.wildcards.table)
log.info("table %s (%s): %d rows x %d columns", snakemake.wildcards.table, spec["kind"], *table.shape)
