# Edits: M_ed = E(M) for each configured editor, stored as a delta (only the edited tensors), and the
# same edit of a fine-tuned variant (re-editing, editing after a fine-tune).


rule refact_statistic:
    """ReFACT's second moment of fc2 inputs: once per (model, variant edited, layer, corpus), shared
    by every edit of that variant (the base's by every first edit)."""
    input:
        chain=R.variant_chain,
        corpus=R.statistic_corpus_inputs,
    output:
        paths.REFACT_STATISTIC,
    params:
        device=R.device,
    log:
        "logs/refact_statistic/{model}/{variant}/L{layer}_{corpus}.log",
    benchmark:
        "benchmarks/rules/refact_statistic/{model}/{variant}/L{layer}_{corpus}.tsv",
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


rule edit_model_after:
    """The same edit applied to a fine-tuned variant: re-editing (`ed-E+ft-F+ed-E`) and editing
    after a fine-tune (`ft-F+ed-E`). The editor wildcard holds no `+`, so the last step is the edit."""
    input:
        unpack(R.edit_inputs),
    output:
        paths.fill(paths.VARIANT_JSON, variant=variant_names.then("{parent}", variant_names.ed("{editor}"))),
    params:
        editor=R.editor_slice,
        resolved=R.editor_resolved_slice,
        sampling=R.sampling_slice,
        device=R.device,
    wildcard_constraints:
        parent=variant_names.WILDCARD,
        editor=variant_names.NAME,
    log:
        "logs/edit_model/{model}/{parent}+ed-{editor}.log",
    benchmark:
        "benchmarks/rules/edit_model/{model}/{parent}+ed-{editor}.tsv"
    threads: R.torch_threads
    resources:
        gpu=R.torch_gpu,
    conda:
        ENV
    script:
        "../scripts/edit_model.py"
