"""Draw one figure from the files the earlier stages wrote; write .png, .pdf and .csv (atomically)."""

from editrobust.report import make_figure
from editrobust.runtime import param_json, setup_job

log = setup_job(snakemake)
spec = param_json(snakemake, "figure")
out = snakemake.output
data = make_figure(spec, list(snakemake.input), out.png, out.pdf, out.csv)
log.info("figure %s (%s): %d values drawn", snakemake.wildcards.figure, spec["kind"], len(data))
