# Edits: M_ed = E(M) for each configured editor, stored as a delta (only the edited tensors).


rule refact_statistic:
    """ReFACT's second moment of fc2 inputs: once per (model, layer, corpus), shared by every edit."""
    input:
        base=paths.fill(paths.VARIANT_JSON, variant="base"),
        corpus=R.statistic_corpus_inputs,
    output:
        paths.REFACT_STATISTIC,
    params:
        device=R.device,
    log:
        "logs/refact_statistic/{model}/L{layer}_{corpus}.log",
    benchmark:
        "benchmarks/rules/refact_statistic/{model}/L{layer}_{corpus}.tsv",
    threads: R.torch_threads
    resources:
        gpu=R.torch_gpu,
    conda:
        ENV
    script:
        "../scripts/refact_statistic.py"


rule edit_model:
    input:
        unpack(R.edit_inputs),
    output:
        paths.fill(paths.VARIANT_JSON, variant=variant_names.ed("{editor}")),
    params:
        editor=R.editor_slice,
        resolved=R.editor_resolved_slice,
        sampling=R.sampling_slice,
        device=R.device,
    log:
        "logs/edit_model/{model}/{editor}.log",
    benchmark:
        "benchmarks/rules/edit_model/{model}/{editor}.tsv"
    threads: R.torch_threads
    resources:
        gpu=R.torch_gpu,
    conda:
        ENV
    script:
        "../scripts/edit_model.py"
