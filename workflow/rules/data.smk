# Stage 1, data: the dataset (downloaded when its kind says so), the evaluation image or
# volume, the SR training set (never containing it), and the Lanczos x4 downsampling.


rule download_dataset:
    output:
        files=directory(f"{DOWNLOAD_DIR}/files"),
        manifest=f"{DOWNLOAD_DIR}/manifest.json",
    log:
        f"{R}/logs/download_dataset.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
    params:
        urls=" ".join(f"--url {shlex.quote(u)}" for u in DATASET["download"]["urls"]),
        sha256=" ".join(f"--sha256={s!r}" for s in DATASET["download"]["sha256"]),
        max_bytes=DATASET["download"]["max_member_bytes"],
    shell:
        "python -m volinr download {params.urls} {params.sha256} --out-dir {output.files} "
        f"--downloads-dir {DOWNLOAD_DIR}/archives --max-member-bytes {{params.max_bytes}} "
        "--manifest {output.manifest} 2> {log}"


if VOLUME_MODE:

    rule prepare_volume:
        input:
            downloaded=(
                rules.download_dataset.output.files
                if DATASET["kind"] == "download"
                else []
            ),
            files=source_files(DATASET),
        output:
            volume=f"{R}/data/volume.npy",
            volume_meta=f"{R}/data/volume.json",
            array=EVAL,
            meta=f"{R}/data/eval.json",
        log:
            f"{R}/logs/prepare_volume.log",
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=mem_mb(4000),
        params:
            spec=lambda wc, input: as_json(
                volume_spec(DATASET, input.downloaded or None)
            ),
            slices=(
                "--evaluation-slices {} {}".format(*VOLUME["evaluation_slices"])
                if VOLUME["evaluation_slices"]
                else ""
            ),
            factor=config["downsample_factor"],
        shell:
            "python -m volinr prepare-volume --spec {params.spec} {params.slices} "
            "--factor {params.factor} --volume-out {output.volume} --out {output.array} 2> {log}"

    rule prepare_sr_volume:
        input:
            files=source_files(VOLUME["sr_dataset"]),
        output:
            volume=f"{R}/data/sr_volume.npy",
            volume_meta=f"{R}/data/sr_volume.json",
        log:
            f"{R}/logs/prepare_sr_volume.log",
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=mem_mb(4000),
        params:
            spec=as_json(volume_spec(VOLUME["sr_dataset"])),
        shell:
            "python -m volinr prepare-volume --spec {params.spec} --volume-out {output.volume} "
            "2> {log}"

else:

    rule prepare_evaluation_image:
        output:
            array=EVAL,
            meta=f"{R}/data/eval.json",
        log:
            f"{R}/logs/prepare_evaluation_image.log",
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=2000,
        params:
            source=config["evaluation_image"]["source"],
            frame=config["evaluation_image"]["frame"],
        shell:
            "python -m volinr prepare --source {params.source:q} --frame {params.frame} "
            "--out {output.array} 2> {log}"


rule sr_training_set:
    input:
        unpack(sr_training_inputs),
        evaluation=EVAL,
    output:
        images=f"{R}/data/sr_training.npz",
        split=f"{R}/data/split.json",
    log:
        f"{R}/logs/sr_training_set.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=mem_mb(4000),
    params:
        args=sr_training_args,
    shell:
        "python -m volinr sr-dataset --eval {input.evaluation} {params.args} "
        "--out {output.images} --split {output.split} 2> {log}"


rule downsample:
    input:
        EVAL,
    output:
        array=LR,
        meta=f"{R}/data/lr.json",
    log:
        f"{R}/logs/downsample.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=mem_mb(4000),
    params:
        factor=config["downsample_factor"],
    shell:
        "python -m volinr downsample --input {input} --factor {params.factor} "
        "--out {output.array} 2> {log}"
