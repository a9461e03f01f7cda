from pathlib import Path

from editrobust.editors import refact_statistic
from editrobust.runtime import job_device, setup_job

setup_job(snakemake)
corpus_files = list(snakemake.input.corpus)  # a download's manifest, next to its lines.txt
refact_statistic(
    Path(snakemake.input.chain[-1]).parent,  # the variant whose text encoder is measured
    int(snakemake.wildcards.layer),
    snakemake.wildcards.corpus,
    snakemake.output[0],
    corpus_dir=Path(corpus_files[0]).parent if corpus_files else None,
    device=job_device(snakemake),
)
