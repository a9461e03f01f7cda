from pathlib import Path

from editrobust.io import write_csv
from editrobust.runtime import job_device, param_json, setup_job
from editrobust.scoring import quality_metrics

log = setup_job(snakemake)
reference = snakemake.input.get("reference")
if reference and Path(reference).name == "manifest.json":  # a download's manifest: its folder holds the images
    reference = str(Path(reference).parent)
table = quality_metrics(snakemake.input.index, param_json(snakemake, "quality_set"), reference_dir=reference,
                        embeddings=snakemake.input.get("embeddings"), device=job_device(snakemake))
log.info("%s", table.to_string(index=False))
write_csv(snakemake.output[0], table)
