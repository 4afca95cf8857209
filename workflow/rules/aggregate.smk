# Stage 7b: the paper's tables with its numbers beside ours, one rule per figure kind (each
# with its own report caption), and a summary.

TABLES = [
    "table4_ours",
    "table5_baseline",
    "table6_side_by_side",
    "table7_other_methods",
    "table_sr_check",
    "table_ablation",
]
FIGURE_SEED = config["figures"]["seed"]
RD_TABLES = ["table_rate_distortion"] + (["table_vs_jpeg2000"] if RD["codecs"] else [])


rule aggregate_tables:
    input:
        metrics=all_metrics(),
        published=config["published"],
    output:
        csv=[table_output(name, "csv") for name in TABLES],
        md=[table_output(name, "md") for name in TABLES],
    log:
        f"{R}/logs/aggregate_tables.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        "python -m volinr tables --metrics {input.metrics} --published {input.published} "
        f"--mode {MODE} --out-dir {R}/tables 2> {{log}}"


rule rate_distortion:
    input:
        metrics=CONTAINER_METRICS,
        references=[
            f"{R}/metrics/reference/{method}.json" for method in REFERENCE_METHODS
        ],
        codecs=CODEC_SWEEP,
        published=config["published"],
    output:
        csv=[table_output(n, "csv") for n in RD_TABLES],
        md=[table_output(n, "md") for n in RD_TABLES],
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
        codecs=lambda wc, input: f"--codecs {input.codecs}" if input.codecs else "",
        amortize=RD["sr_amortize_over"],
    shell:
        "python -m volinr rate-distortion --metrics {input.metrics} {input.references} "
        "{params.codecs} --published {input.published} --mode "
        f"{MODE} --sr-amortize-over {{params.amortize}} --out-dir {R}/tables "
        "--figure {output.figure} 2> {log}"


FIGURE_SHELL = (
    f"python -m volinr figure --results {R} --tables-dir {R}/tables --seed {FIGURE_SEED} "
    "--kind {params.kind} --layers {params.layers} --out {output} 2> {log}"
)


rule figure_lr_fit:
    input:
        tables=rules.aggregate_tables.output.csv,
        lr=run_outputs("recon", "ours", "lr.npy"),
        curve=run_outputs("fits", "lr", "curve.csv"),
    output:
        report(
            f"{R}/figures/fig4-6_lr_fit_L{{layers}}.png",
            caption="../report/fig_lr_fit.rst",
            category="Figures",
            subcategory="Figures 4-6: SIREN on the LR slice",
        ),
    log:
        f"{R}/logs/figures/lr_fit_L{{layers}}.log",
    conda:
        ENV
    threads: 1
    params:
        kind="lr-fit",
        layers=lambda wc: wc.layers,
    shell:
        FIGURE_SHELL


rule figure_pipeline:
    input:
        tables=rules.aggregate_tables.output.csv,
        lr=run_outputs("recon", "ours", "lr.npy"),
        hr=run_outputs("recon", "ours", "hr.npy"),
        metrics=shown_metrics("ours"),
    output:
        report(
            f"{R}/figures/fig7-9_pipeline_L{{layers}}.png",
            caption="../report/fig_pipeline.rst",
            category="Figures",
            subcategory="Figures 7-9: the whole pipeline",
        ),
    log:
        f"{R}/logs/figures/pipeline_L{{layers}}.log",
    conda:
        ENV
    threads: 1
    params:
        kind="pipeline",
        layers=lambda wc: wc.layers,
    shell:
        FIGURE_SHELL


rule figure_baseline:
    input:
        tables=rules.aggregate_tables.output.csv,
        hr=run_outputs("recon", "baseline", "hr.npy"),
        curve=run_outputs("fits", "hr", "curve.csv"),
        metrics=shown_metrics("baseline"),
    output:
        report(
            f"{R}/figures/fig10-12_baseline_L{{layers}}.png",
            caption="../report/fig_baseline.rst",
            category="Figures",
            subcategory="Figures 10-12: SIREN on the full-resolution slice",
        ),
    log:
        f"{R}/logs/figures/baseline_L{{layers}}.log",
    conda:
        ENV
    threads: 1
    params:
        kind="baseline",
        layers=lambda wc: wc.layers,
    shell:
        FIGURE_SHELL


rule figure_bars:
    input:
        tables=rules.aggregate_tables.output.csv,
    output:
        report(
            f"{R}/figures/fig13_bars.png",
            caption="../report/fig13_bars.rst",
            category="Figures",
        ),
    log:
        f"{R}/logs/figures/bars.log",
    conda:
        ENV
    threads: 1
    params:
        kind="bars",
        layers=" ".join(str(n) for n in LAYERS),
    shell:
        FIGURE_SHELL


rule figure_comparison:
    input:
        tables=rules.aggregate_tables.output.csv,
        ours=[run_outputs("recon", "ours", "hr.npy", n) for n in LAYERS],
        baseline=[run_outputs("recon", "baseline", "hr.npy", n) for n in LAYERS],
        metrics=[shown_metrics(k, n) for k in ("ours", "baseline") for n in LAYERS],
    output:
        report(
            f"{R}/figures/fig14_comparison.png",
            caption="../report/fig14_comparison.rst",
            category="Figures",
        ),
    log:
        f"{R}/logs/figures/comparison.log",
    conda:
        ENV
    threads: 1
    params:
        kind="comparison",
        layers=" ".join(str(n) for n in LAYERS),
    shell:
        FIGURE_SHELL


rule figure_sr_training:
    input:
        curve=rules.pretrain_sr.output.curve,
    output:
        report(
            f"{R}/figures/fig_sr_training.png",
            caption="../report/fig_sr_training.rst",
            category="Figures",
        ),
    log:
        f"{R}/logs/figures/sr_training.log",
    conda:
        ENV
    threads: 1
    params:
        kind="sr-training",
        layers=LAYERS[0],
    shell:
        FIGURE_SHELL


rule figure_per_slice:
    input:
        tables=rules.aggregate_tables.output.csv,
        per_slice=[m.replace(".json", ".slices.csv") for m in all_metrics()],
    output:
        report(
            f"{R}/figures/volume_per_slice.png",
            caption="../report/fig_per_slice.rst",
            category="Figures",
            subcategory="Volume mode",
        ),
    log:
        f"{R}/logs/figures/per_slice.log",
    conda:
        ENV
    threads: 1
    params:
        kind="per-slice",
        layers=" ".join(str(n) for n in LAYERS),
    shell:
        FIGURE_SHELL


rule figure_orthogonal:
    input:
        tables=rules.aggregate_tables.output.csv,
        ours=[run_outputs("recon", "ours", "hr.npy", n) for n in LAYERS],
        baseline=[run_outputs("recon", "baseline", "hr.npy", n) for n in LAYERS],
    output:
        report(
            f"{R}/figures/volume_orthogonal.png",
            caption="../report/fig_orthogonal.rst",
            category="Figures",
            subcategory="Volume mode",
        ),
    log:
        f"{R}/logs/figures/orthogonal.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=mem_mb(2000),
    params:
        kind="orthogonal",
        layers=" ".join(str(n) for n in LAYERS),
    shell:
        FIGURE_SHELL


VOLUME_FIGURES = rules.figure_per_slice.output + rules.figure_orthogonal.output

FIGURES = (
    expand(rules.figure_lr_fit.output, layers=LAYERS)
    + expand(rules.figure_pipeline.output, layers=LAYERS)
    + expand(rules.figure_baseline.output, layers=LAYERS)
    + rules.figure_bars.output
    + rules.figure_comparison.output
    + rules.figure_sr_training.output
    + (VOLUME_FIGURES if VOLUME_MODE else [])
    + [rules.rate_distortion.output.figure]
)


rule summary:
    input:
        tables=rules.aggregate_tables.output.md,
        rate_distortion=rules.rate_distortion.output.md,
        figures=FIGURES,
    output:
        report(f"{R}/summary.md", caption="../report/summary.rst", category="Summary"),
    log:
        f"{R}/logs/summary.log",
    conda:
        ENV
    threads: 1
    shell:
        f"python -m volinr summary --tables-dir {R}/tables --results {R} --out {{output}} 2> {{log}}"
