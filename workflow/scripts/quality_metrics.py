from pathlib import Path

import pandas as pd

from editrobust.io import write_csv
from editrobust.runtime import param_json, setup_job
from editrobust.devices import pick_device
from editrobust.scoring.quality import quality_table

log = setup_job(snakemake)
entry = param_json(snakemake, "quality_set")
index_csv = Path(snakemake.input.index)
reference = snakemake.input.get("reference")
if reference and Path(reference).name == "manifest.json":  # a download's manifest: its folder holds the images
    reference = str(Path(reference).parent)
table = quality_table(pd.read_csv(index_csv), index_csv.parent, entry,
                      reference_dir=reference, embeddings=snakemake.input.get("embeddings"),
                      device=str(pick_device(snakemake.params.device)))
log.info("%s", table.to_string(index=False))
write_csv(snakemake.output[0], table)
