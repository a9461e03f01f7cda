# Downloads and hub snapshots: the only rules that may use the network. Each fetches once, from a
# pinned source, into resources/; everything downstream reads those files offline. They run on
# the submitting host (localrules), where a cluster usually has internet and compute nodes do not.


localrules:
    fetch_download,
    snapshot_hub_model,


rule fetch_download:
    input:
        unpack(R.download_inputs),
    output:
        paths.MANIFEST,
    params:
        download=R.download_slice,
    wildcard_constraints:
        download=variant_names.NAME,
    log:
        "logs/fetch_download/{download}.log",
    conda:
        ENV
    script:
        "../scripts/fetch_download.py"


rule snapshot_hub_model:
    """A hub model's pinned snapshot (and replacement VAE), verified; its record feeds prepare_base_model."""
    output:
        paths.HUB_SNAPSHOT,
    params:
        model=R.hub_model_slice,
    log:
        "logs/snapshot_hub_model/{model}.log",
    conda:
        ENV
    script:
        "../scripts/snapshot_hub_model.py"
