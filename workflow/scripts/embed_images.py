from pathlib import Path

import pandas as pd

from editrobust.runtime import param_json, setup_job
from editrobust.devices import pick_device
from editrobust.scoring.embeddings import embed_image_set

log = setup_job(snakemake)
spec = param_json(snakemake, "clip_model")
index_csv = Path(snakemake.input.index)
device = pick_device(snakemake.params.device)
embed_image_set(pd.read_csv(index_csv), index_csv.parent, spec, snakemake.output[0], device=str(device))
log.info("embedded %s with %s on %s", index_csv.parent, spec["name"], device)
