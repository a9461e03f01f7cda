# Edits: M_ed = E(M) for each configured editor, stored as a delta (only the edited tensors).


rule refact_statistic:
    """ReFACT's second moment of fc2 inputs: once per (model, layer, corpus), shared by every edit."""
    input:
        base="results/models/{model}/base/variant.json",
        corpus=refact_corpus_inputs,
    output:
        "results/stats/{model}/fc2_second_moment_L{layer}_{corpus}.safetensors",
    log:
        "logs/refact_statistic/{model}/L{layer}_{corpus}.log",
    params:
        device=config["device"],
    threads: TORCH_THREADS
    resources:
        gpu=TORCH_GPU,
    script:
        "../scripts/refact_statistic.py"


rule edit_model:
    input:
        unpack(edit_inputs),
    output:
        "results/models/{model}/ed-{editor}/variant.json",
    params:
        editor=editor_slice,
        sampling=sampling_settings_slice,
        device=config["device"],
        resolved=editor_resolved_slice,
    log:
        "logs/edit_model/{model}/{editor}.log",
    benchmark:
        "benchmarks/rules/edit_model/{model}/{editor}.tsv"
    threads: TORCH_THREADS
    resources:
        gpu=TORCH_GPU,
    script:
        "../scripts/edit_model.py"
