# Promptsets: every evaluation prompt list as one CSV format (prompt_id, prompt, metadata).


rule build_promptset:
    input:
        promptset_inputs,
    output:
        "results/promptsets/{promptset}.csv",
    params:
        promptset=promptset_slice,
    log:
        "logs/build_promptset/{promptset}.log",
    script:
        "../scripts/build_promptset.py"
