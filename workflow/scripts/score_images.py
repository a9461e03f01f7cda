from pathlib import Path

import pandas as pd

from editrobust.io import write_csv
from editrobust.runtime import param_json, setup_job
from editrobust.scoring import get_scorer

log = setup_job(snakemake)
entry = param_json(snakemake, "scorer")
index_csv = Path(snakemake.input.index)
# Named inputs besides the index (the shared CLIP embeddings, a human labels CSV) go to the scorer.
extra = {name: path for name, path in snakemake.input.items() if name != "index"}
scores = get_scorer(entry["kind"])(pd.read_csv(index_csv), index_csv.parent, entry, **extra)
log.info("%d images scored by %s", len(scores), snakemake.wildcards.scorer)
write_csv(snakemake.output[0], scores)
