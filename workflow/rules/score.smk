# Scoring: one row per image per scorer; summaries are pure functions of score files.


rule score_images:
    input:
        "results/samples/{model}/{variant}/{promptset}/index.csv",
    output:
        "results/scores/{model}/{variant}/{promptset}/{scorer}.csv",
    params:
        scorer=scorer_slice,
    log:
        "logs/score_images/{model}/{variant}/{promptset}/{scorer}.log",
    threads: 1
    script:
        "../scripts/score_images.py"


rule summarize_scores:
    input:
        "results/scores/{model}/{variant}/{promptset}/{scorer}.csv",
    output:
        "results/summaries/{model}/{variant}/{promptset}/{scorer}.csv",
    log:
        "logs/summarize_scores/{model}/{variant}/{promptset}/{scorer}.log",
    script:
        "../scripts/summarize_scores.py"
