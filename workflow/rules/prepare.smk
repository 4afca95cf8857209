# Stage 1, data: the evaluation image and the SR training set (never containing it).


rule prepare_evaluation_image:
    output:
        array=f"{R}/data/eval.npy",
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
        evaluation=rules.prepare_evaluation_image.output.array,
    output:
        images=f"{R}/data/sr_training.npz",
        split=f"{R}/data/split.json",
    log:
        f"{R}/logs/sr_training_set.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
    params:
        sources=" ".join(f"--source {s!r}" for s in config["sr_training_sources"]),
        max_correlation=config["max_training_correlation"],
    shell:
        "python -m volinr sr-dataset --eval {input.evaluation} {params.sources} "
        "--max-correlation {params.max_correlation} --out {output.images} "
        "--split {output.split} 2> {log}"
