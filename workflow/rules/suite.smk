# Suite mode: this workflow once per dataset of config["suite"], each a module of the very same
# Snakefile (Snakemake's modules: no scheduler of ours) whose config is the suite's base config
# merged with the dataset's overrides, its results under results/suite/<name> and its rules
# prefixed <name>_; then the tables across the datasets, and the suite's summary.


include: "suite_common.smk"


for suite_name in SUITE:
    suite_module = f"suite_{suite_name}"
    suite_prefix = f"{suite_name}_"

    module:
        name: suite_module
        snakefile:
            "../Snakefile"
        config:
            DATASET_CONFIGS[suite_name]

    use rule * from suite_module exclude all as suite_prefix*


rule suite_report:
    input:
        summaries=[f"{SUITE_DIR}/{name}/summary.md" for name in SUITE],
    output:
        tables=[
            f"{SUITE_DIR}/tables/{table}.{ext}"
            for table in (
                "suite_datasets",
                "suite_bd_rate",
                "suite_bd_rate_mean",
                "suite_paper_claim",
                "suite_paper_claim_counts",
                "suite_sr_gain",
            )
            for ext in ("csv", "md")
        ],
        figure=f"{SUITE_DIR}/figures/fig_suite_rate_distortion.png",
        summary=f"{SUITE_DIR}/summary.md",
    log:
        f"{SUITE_DIR}/logs/suite_report.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
    params:
        datasets=suite_dataset_args(),
        tables=lambda wildcards, output: Path(output.tables[0]).parent,
    shell:
        "python -m volinr suite-report {params.datasets} --out-dir {params.tables} "
        "--figure {output.figure} --summary {output.summary} 2> {log}"


# The default target (the Snakefile's rule all): the suite's tables, figure and summary.
DEFAULT_TARGETS = rules.suite_report.output
