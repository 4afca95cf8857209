# Stage 7a: quality (8-bit PSNR in two windows, native PSNR, SSIM) and sizes (weights bytes,
# compression rates, bits per voxel) of every reconstruction against the original image.

EVAL_ARGS = "--tissue-window {params.window} --per-slice {output.per_slice}"


rule evaluate_ours:
    input:
        reference=EVAL,
        reconstruction=rules.super_resolve_lr_fit.output.array,
        lr_reconstruction=rules.decode_lr_fit.output.array,
        lr=rules.downsample.output.array,
        record=rules.fit_siren_lr.output.record,
        model=rules.pretrain_sr.output.model,
    output:
        metrics=f"{R}/metrics/ours/L{{layers}}_s{{seed}}.json",
        per_slice=f"{R}/metrics/ours/L{{layers}}_s{{seed}}.slices.csv",
    log:
        f"{R}/logs/evaluate_ours/L{{layers}}_s{{seed}}.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=mem_mb(2000),
    params:
        label=label("ours"),
        window=tissue_window(),
    shell:
        "python -m volinr evaluate --reference {input.reference} --reconstruction {input.reconstruction} "
        "--lr-reference {input.lr} --lr-reconstruction {input.lr_reconstruction} "
        "--label {params.label} --fit-record {input.record} --sr-model {input.model} "
        f"{EVAL_ARGS} --out {{output.metrics}} 2> {{log}}"


rule evaluate_baseline:
    input:
        reference=EVAL,
        reconstruction=rules.decode_baseline.output.array,
        record=rules.fit_siren_hr.output.record,
    output:
        metrics=f"{R}/metrics/baseline/L{{layers}}_s{{seed}}.json",
        per_slice=f"{R}/metrics/baseline/L{{layers}}_s{{seed}}.slices.csv",
    log:
        f"{R}/logs/evaluate_baseline/L{{layers}}_s{{seed}}.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=mem_mb(2000),
    params:
        label=label("baseline"),
        window=tissue_window(),
    shell:
        "python -m volinr evaluate --reference {input.reference} --reconstruction {input.reconstruction} "
        "--label {params.label} --fit-record {input.record} "
        f"{EVAL_ARGS} --out {{output.metrics}} 2> {{log}}"


rule evaluate_reference:
    input:
        reference=EVAL,
        reconstruction=rules.upsample_true_lr.output.array,
        lr=rules.downsample.output.array,
        model=sr_model_if_needed,
    output:
        metrics=f"{R}/metrics/reference/{{method}}.json",
        per_slice=f"{R}/metrics/reference/{{method}}.slices.csv",
    log:
        f"{R}/logs/evaluate_reference/{{method}}.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=mem_mb(2000),
    params:
        label=lambda wc: as_json({"method": f"true LR + {wc.method}"}),
        window=tissue_window(),
        amortize=config["rate_distortion"]["sr_amortize_over"],
    shell:
        "python -m volinr evaluate --reference {input.reference} --reconstruction {input.reconstruction} "
        "--label {params.label} --sr-model '{input.model}' --stored-array {input.lr} "
        "--sr-amortize-over {params.amortize} "
        f"{EVAL_ARGS} --out {{output.metrics}} 2> {{log}}"
