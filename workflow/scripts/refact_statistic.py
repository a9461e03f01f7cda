from pathlib import Path

from editrobust.editing import compute_fc2_statistic, statistics_corpus
from editrobust.runtime import setup_job

log = setup_job(snakemake)
corpus_files = list(snakemake.input.corpus)  # a download's manifest, next to its lines.txt
texts = statistics_corpus(snakemake.wildcards.corpus, Path(corpus_files[0]).parent if corpus_files else None)
log.info("%d texts from corpus %s", len(texts), snakemake.wildcards.corpus)
compute_fc2_statistic(Path(snakemake.input[0]).parent, int(snakemake.wildcards.layer), texts, snakemake.output[0])
