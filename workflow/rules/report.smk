# Stage 5, what a run shows: the paper's Tables 4-7 (its numbers beside ours) with the SR check
# and the ablation, read from the paper point of each SIREN and true-LR group; the
# rate-distortion tables and figure over every method's points; the figures; the summary. A
# run whose methods leave out one of PAPER_METHODS makes no paper tables or figures.


rule paper_tables:
    input:
        rows=PAPER_ROWS,
        published=config["published"],
        replicates=REPLICATES,
    output:
        **table_outputs(PAPER_TABLES),
    log:
        f"{R}/logs/paper_tables.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
    params:
        margin=config["evaluation"]["verdict_margin_db"],
        replicates=lambda wildcards, input: " ".join(
            f"--replicates {shlex.quote(path)}" for path in input.replicates
        ),
    shell:
        "python -m volinr tables --metrics {input.rows} --published {input.published} "
        f"--mode {MODE} --verdict-margin-db {{params.margin}} {{params.replicates}} "
        f"--out-dir {R}/tables 2> {{log}}"


rule rate_distortion:
    input:
        rows=ALL_ROWS,
        published=config["published"],
    output:
        **table_outputs(RD_TABLE_NAMES),
        figure=report(
            f"{R}/figures/fig_rate_distortion.png",
            caption="../report/fig_rate_distortion.rst",
            category="Figures",
        ),
    log:
        f"{R}/logs/rate_distortion.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
    params:
        amortize=RD["sr_amortize_over"],
    shell:
        "python -m volinr rate-distortion --rows {input.rows} --published {input.published} "
        f"--mode {MODE} --sr-amortize-over {{params.amortize}} --out-dir {R}/tables "
        "--figure {output.figure} 2> {log}"


rule figures:
    input:
        tables=rules.paper_tables.output.csv,
        shown=shown_groups("siren_lr_sr") + shown_groups("siren_hr"),
        true_lr=[rd_dir("true_lr", group) for group in METHOD_GROUPS.get("true_lr", [])],
        curves=[
            f"{fit_dir(t, n, FIGURE_SEED)}/curve.csv"
            for t in ("lr", "hr")
            for n in LAYERS
        ],
        sr_curve=rules.pretrain_sr.output.curve,
    output:
        [figure_output(name) for name in FIGURE_NAMES],
    log:
        f"{R}/logs/figures.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=mem_mb(2000),
    params:
        layers=" ".join(str(n) for n in LAYERS),
    shell:
        f"python -m volinr figures --results {R} --tables-dir {R}/tables --seed {FIGURE_SEED} "
        f"--layers {{params.layers}} --mode {MODE} --out-dir {R}/figures 2> {{log}}"


rule summary:
    input:
        tables=rules.paper_tables.output.md if PAPER_MODE else [],
        rate_distortion=rules.rate_distortion.output.md,
        figures=rules.figures.output if PAPER_MODE else [],
    output:
        report(f"{R}/summary.md", caption="../report/summary.rst", category="Summary"),
    log:
        f"{R}/logs/summary.log",
    conda:
        ENV
    threads: 1
    params:
        methods=" ".join(METHODS),
    shell:
        f"python -m volinr summary --tables-dir {R}/tables --results {R} "
        "--methods {params.methods} --out {output} 2> {log}"
