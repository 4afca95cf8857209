# Stage 4: SIREN fits on the Lanczos-downsampled image (the paper's method), one job per
# (layers, seed). FIT_SHELL is shared with the full-resolution baseline (baseline.smk).

SIREN = config["siren"]
FIT_SHELL = (
    "python -m volinr fit --target {input.target} --sine-layers {wildcards.layers} "
    f"--width {SIREN['width']} --omega0 {SIREN['omega0']} "
    f"--learning-rate {SIREN['learning_rate']} --batch-size {SIREN['batch_size']} "
    f"--eval-every {SIREN['eval_every']} {'--compile' if SIREN['compile'] else ''} "
    f"--step {SIREN['step']} --precision {SIREN['precision']} "
    f"--checkpoint-every {SIREN['checkpoint_every']} "
    f"--divergence-retries {SIREN['divergence_retries']} "
    f"--divergence-lr-factor {SIREN['divergence_lr_factor']} "
    "--iterations {params.iterations} --seed {wildcards.seed} "
    "--weights {output.weights} --record {output.record} --curve {output.curve} "
    f"{DEVICE_ARGS} 2> {{log}}"
)


rule fit_siren_lr:
    input:
        target=rules.downsample.output.array,
    output:
        weights=f"{fit_dir('lr')}/siren.pt",
        record=f"{fit_dir('lr')}/fit.json",
        curve=f"{fit_dir('lr')}/curve.csv",
    log:
        f"{R}/logs/fit_siren_lr/L{{layers}}_s{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/fit_siren_lr/L{{layers}}_s{{seed}}.tsv"
    conda:
        ENV
    threads: config["threads"]
    resources:
        gpu=1,
        mem_mb=mem_mb(4000),
    params:
        iterations=SIREN["iterations"],
    shell:
        FIT_SHELL
