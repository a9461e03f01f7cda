from editrobust.io import write_csv
from editrobust.runtime import setup_job
from editrobust.scoring import summarize_scores

setup_job(snakemake)
write_csv(snakemake.output[0], summarize_scores(snakemake.input[0]))
