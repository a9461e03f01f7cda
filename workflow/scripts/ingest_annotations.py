"""Un-blind the annotators' CSVs into the human scorer's labels files; Fleiss' kappa per variant."""

from editrobust.report import ingest_annotations
from editrobust.runtime import param_json, setup_job

log = setup_job(snakemake)
labels = param_json(snakemake, "labels")  # {variant: labels path}, the same paths as the outputs
table = ingest_annotations(snakemake.input.key, list(snakemake.input.annotations), labels, snakemake.output.agreement)
log.info("annotations of %s:\n%s", snakemake.params.kit, table.to_string(index=False))
