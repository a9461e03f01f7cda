"""Export a blinded annotation kit (kit/index.html + images/) and its private key."""

from editrobust.report import export_annotation_kit
from editrobust.runtime import param_json, setup_job

log = setup_job(snakemake)
spec = param_json(snakemake, "kit")
key = export_annotation_kit(spec, snakemake.wildcards.kit, list(snakemake.input), snakemake.output.kit,
                            snakemake.output.key)
log.info("kit %s: %d images of %d variants", snakemake.wildcards.kit, len(key), key["variant"].nunique())
