"""The report: figures (comparison grids, Figure-3 bars, persistence curves) and the human
annotation kit. Everything here reads files the earlier stages wrote (samples, score files,
tables): a new figure never regenerates an image.

    spec         figure entries: defaults, input files, config cross-references
    grid         M, M_ed, M_ft, M_ed_ft side by side for the same prompt and seed
    bars         the study's Figure 3 from a table's CSV, with CI whiskers
    persistence  edit metric vs fine-tuning step from the checkpoint variants
    render       PNG + PDF + CSV of a figure, all or nothing
    figures      build_figure: the builder of a figure kind
    annotation   blinded annotation kit (offline HTML page) and ingestion of annotators' CSVs

The package itself imports nothing heavy: config validation imports `spec` only.
"""
