# Stage 5, reconstruction: decode the SIREN fitted on the LR image and restore full
# resolution with the pretrained SRDenseNet. The true LR image is also upsampled by SR,
# Lanczos and bicubic: the SR check and the "no SIREN" ablation. Every job that runs torch on
# the device holds the gpu resource, so none overlaps a timed fit.


rule decode_lr_fit:
    input:
        weights=rules.fit_siren_lr.output.weights,
    output:
        array=f"{R}/recon/ours/L{{layers}}_s{{seed}}/lr.npy",
        meta=f"{R}/recon/ours/L{{layers}}_s{{seed}}/lr.json",
    log:
        f"{R}/logs/decode_lr_fit/L{{layers}}_s{{seed}}.log",
    conda:
        ENV
    threads: config["threads"]
    resources:
        gpu=1,
        mem_mb=mem_mb(2000),
    shell:
        "python -m volinr decode --weights {input.weights} --out {output.array} "
        f"{DECODE_ARGS} {DEVICE_ARGS} 2> {{log}}"


rule super_resolve_lr_fit:
    input:
        lr=rules.decode_lr_fit.output.array,
        model=rules.pretrain_sr.output.model,
        reference=EVAL,
    output:
        array=f"{R}/recon/ours/L{{layers}}_s{{seed}}/hr.npy",
        meta=f"{R}/recon/ours/L{{layers}}_s{{seed}}/hr.json",
    log:
        f"{R}/logs/super_resolve_lr_fit/L{{layers}}_s{{seed}}.log",
    conda:
        ENV
    threads: config["threads"]
    resources:
        gpu=1,
        mem_mb=mem_mb(4000),
    shell:
        "python -m volinr upsample --input {input.lr} --method sr --sr-model {input.model} "
        f"--reference {{input.reference}} --z-restore {VOLUME['z_restore']} "
        f"--out {{output.array}} {DEVICE_ARGS} 2> {{log}}"


rule upsample_true_lr:
    input:
        lr=rules.downsample.output.array,
        model=sr_model_if_needed,
        reference=EVAL,
    output:
        array=f"{R}/recon/reference/{{method}}.npy",
        meta=f"{R}/recon/reference/{{method}}.json",
    log:
        f"{R}/logs/upsample_true_lr/{{method}}.log",
    conda:
        ENV
    threads: config["threads"]
    resources:
        gpu=1,
        mem_mb=mem_mb(4000),
    shell:
        "python -m volinr upsample --input {input.lr} --method {wildcards.method} "
        "--sr-model '{input.model}' --reference {input.reference} --out {output.array} "
        f"--z-restore {VOLUME['z_restore']} {DEVICE_ARGS} 2> {{log}}"
