import pandas as pd

from editrobust.io import write_csv
from editrobust.runtime import setup_job
from editrobust.scoring.summary import summarize

setup_job(snakemake)
write_csv(snakemake.output[0], summarize(pd.read_csv(snakemake.input[0])))
