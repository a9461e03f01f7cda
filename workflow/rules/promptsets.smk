# Promptsets: every evaluation prompt list as one CSV format (prompt_id, prompt, metadata).


rule build_promptset:
    input:
        R.promptset_inputs,
    output:
        paths.PROMPTSET,
    params:
        promptset=R.promptset_slice,
    log:
        "logs/build_promptset/{promptset}.log",
    benchmark:
        "benchmarks/rules/build_promptset/{promptset}.tsv",
    conda:
        ENV
    script:
        "../scripts/build_promptset.py"
