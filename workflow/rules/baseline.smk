# Stage 6, the baseline (Mancini et al. 2022): the same SIREN configurations fitted directly
# to the full-resolution image, same hyperparameters, then decoded at full resolution.


rule fit_siren_hr:
    input:
        target=EVAL,
    output:
        weights=f"{fit_dir('hr')}/siren.pt",
        record=f"{fit_dir('hr')}/fit.json",
        curve=f"{fit_dir('hr')}/curve.csv",
    log:
        f"{R}/logs/fit_siren_hr/L{{layers}}_s{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/fit_siren_hr/L{{layers}}_s{{seed}}.tsv"
    conda:
        ENV
    threads: config["threads"]
    resources:
        gpu=1,
        mem_mb=mem_mb(8000),
    params:
        iterations=SIREN["baseline_iterations"],
    shell:
        FIT_SHELL


rule decode_baseline:
    input:
        weights=rules.fit_siren_hr.output.weights,
    output:
        array=f"{R}/recon/baseline/L{{layers}}_s{{seed}}/hr.npy",
        meta=f"{R}/recon/baseline/L{{layers}}_s{{seed}}/hr.json",
    log:
        f"{R}/logs/decode_baseline/L{{layers}}_s{{seed}}.log",
    conda:
        ENV
    threads: config["threads"]
    resources:
        gpu=1,
        mem_mb=mem_mb(4000),
    shell:
        "python -m volinr decode --weights {input.weights} --out {output.array} "
        f"--like {R}/data/eval.json {DECODE_ARGS} {DEVICE_ARGS} 2> {{log}}"
