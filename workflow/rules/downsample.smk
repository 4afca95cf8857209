# Stage 2: antialiased Lanczos downsampling of the evaluation image (x4 per axis).


rule downsample:
    input:
        EVAL,
    output:
        array=f"{R}/data/lr.npy",
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
        "python -m volinr downsample --input {input} --factor {params.factor} --out {output.array} 2> {log}"
