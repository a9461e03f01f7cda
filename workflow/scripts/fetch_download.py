from pathlib import Path

from editrobust.data.downloads import fetch_download
from editrobust.runtime import param_json, setup_job

log = setup_job(snakemake)
manifest = fetch_download(snakemake.wildcards.download, param_json(snakemake, "download"),
                          Path(snakemake.output[0]).parent, inputs=dict(snakemake.input.items()))
log.info("%s: %d files", snakemake.wildcards.download, len(manifest["files"]))
