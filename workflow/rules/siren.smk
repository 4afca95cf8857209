# Stage 3: the SIREN fits, one job per (target, layers, seed): target lr is the paper's method
# (the SIREN on the Lanczos-downsampled image), hr its baseline (the SIREN on the original).


rule fit_siren:
    input:
        target=lambda wc: FIT_TARGETS[wc.target],
    output:
        weights=f"{fit_dir()}/siren.pt",
        record=f"{fit_dir()}/fit.json",
        curve=f"{fit_dir()}/curve.csv",
    log:
        f"{R}/logs/fit_siren/{{target}}_L{{layers}}_s{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/fit_siren/{{target}}_L{{layers}}_s{{seed}}.tsv"
    conda:
        ENV
    threads: config["threads"]
    resources:
        gpu=1,
        slurm_partition=GPU_PARTITION,
        mem_mb=lambda wc: mem_mb(4000 if wc.target == "lr" else 8000),
    params:
        settings=as_json(SIREN),
        iterations=lambda wc: FIT_ITERATIONS[wc.target],
    shell:
        "python -m volinr fit --target {input.target} --sine-layers {wildcards.layers} "
        "--seed {wildcards.seed} --iterations {params.iterations} --settings {params.settings} "
        "--weights {output.weights} --record {output.record} --curve {output.curve} "
        f"{DEVICE_ARGS} 2> {{log}}"
