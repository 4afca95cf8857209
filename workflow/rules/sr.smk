# Stage 2: SRDenseNet pretraining on LR/HR pairs of the training images. A committed
# checkpoint is reused when its sha256, architecture, training split and settings all match.


rule pretrain_sr:
    input:
        images=rules.sr_training_set.output.images,
        split=rules.sr_training_set.output.split,
    output:
        model=SR_MODEL,
        curve=f"{R}/sr/training_curve.csv",
    log:
        f"{R}/logs/pretrain_sr.log",
    benchmark:
        f"{R}/benchmarks/pretrain_sr.tsv"
    conda:
        ENV
    threads: config["threads"]
    resources:
        gpu=1,
        slurm_partition=GPU_PARTITION,
        mem_mb=8000,
    params:
        model=as_json(config["sr"]["model"]),
        settings=as_json(config["sr"]["training"]),
        factor=config["downsample_factor"],
        pretrained=config["sr"]["checkpoint"],
        sha256=config["sr"]["checkpoint_sha256"],
        retrain="--retrain" if config["sr"]["retrain"] else "",
    shell:
        "python -m volinr pretrain-sr --training {input.images} --split {input.split} "
        "--factor {params.factor} --model {params.model} --settings {params.settings} "
        "--pretrained={params.pretrained:q} --pretrained-sha256={params.sha256:q} "
        "{params.retrain} --out {output.model} --curve {output.curve} "
        f"{DEVICE_ARGS} 2> {{log}}"
