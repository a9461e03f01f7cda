from pathlib import Path

import pandas as pd

from editrobust.io import write_csv
from editrobust.runtime import param_json, setup_job
from editrobust.scoring import get_scorer

log = setup_job(snakemake)
entry = param_json(snakemake, "scorer")
index_csv = Path(snakemake.input[0])
scores = get_scorer(entry["kind"])(pd.read_csv(index_csv), index_csv.parent, entry)
log.info("%d images scored by %s", len(scores), snakemake.wildcards.scorer)
write_csv(snakemake.output[0], scores)
