# Downloads and hub snapshots: the only rules that may use the network. Each fetches once, from a
# pinned source, into resources/; everything downstream reads those files offline. They run on
# the submitting host (localrules), where a cluster usually has internet and compute nodes do not.
from editrobust.data.downloads import download_for_path, manifest_path


localrules:
    fetch_download,
    snapshot_hub_model,


def via_downloads(path):
    """A config path inside resources/datasets/<download>/ depends on that download's manifest
    (written last, after every file was verified); any other path on itself."""
    return download_for_path(str(path), config.get("downloads", {})) or str(path)


def download_inputs(wildcards):
    """A COCO image download needs the ids of its COCO promptset."""
    entry = config["downloads"][wildcards.download]
    if entry["kind"] == "coco_images":
        return {"promptset": f"results/promptsets/{entry['promptset']}.csv"}
    return {}


rule fetch_download:
    input:
        unpack(download_inputs),
    output:
        manifest_path("{download}"),
    params:
        download=lambda wildcards: canonical(config["downloads"][wildcards.download]),
    wildcard_constraints:
        download=NAME,
    log:
        "logs/fetch_download/{download}.log",
    script:
        "../scripts/fetch_download.py"


def hub_model_slice(wildcards):
    entry = config["models"][wildcards.model]
    if entry["kind"] != "hub":
        raise WorkflowError(f"models.{wildcards.model} is not a hub model (kind {entry['kind']})")
    return canonical(entry)


rule snapshot_hub_model:
    """A hub model's pinned snapshot (and replacement VAE), verified; its record feeds prepare_base_model."""
    output:
        "resources/hub/snapshots/{model}.json",
    params:
        model=hub_model_slice,
    log:
        "logs/snapshot_hub_model/{model}.log",
    script:
        "../scripts/snapshot_hub_model.py"


def base_model_inputs(wildcards):
    if config["models"][wildcards.model]["kind"] == "hub":
        return {"snapshot": f"resources/hub/snapshots/{wildcards.model}.json"}
    return {}


def refact_corpus_inputs(wildcards):
    """ReFACT's statistic reads a downloaded corpus (WikiText-103 lines) unless it is the toy's."""
    if wildcards.corpus in config.get("downloads", {}):
        return [manifest_path(wildcards.corpus)]
    return []

