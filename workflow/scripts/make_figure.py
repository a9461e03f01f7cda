"""Draw one figure from the files the earlier stages wrote; write .png, .pdf and .csv (atomically)."""

from editrobust.report.figures import build_figure, write_figure
from editrobust.runtime import param_json, setup_job

log = setup_job(snakemake)
spec = param_json(snakemake, "figure")
fig, data = build_figure(spec, list(snakemake.input))
out = snakemake.output
write_figure(fig, data, out.png, out.pdf, out.csv, dpi=spec["dpi"])
log.info("figure %s (%s): %d values drawn", snakemake.wildcards.figure, spec["kind"], len(data))
