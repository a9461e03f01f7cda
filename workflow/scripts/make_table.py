"""Build one table from its score files; write .csv, .md and .tex (each atomically)."""

from editrobust.runtime import param_json, setup_job
from editrobust.tables import build_table, read_inputs, write_table

log = setup_job(snakemake)
spec = param_json(snakemake, "table")
table = build_table(spec, read_inputs(spec, list(snakemake.input)))
out = snakemake.output
write_table(table, spec, out.csv, out.md, out.tex, name=snakemake.wildcards.table)
log.info("table %s (%s): %d rows x %d columns", snakemake.wildcards.table, spec["kind"], *table.shape)
