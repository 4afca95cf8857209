# Stage 2: antialiased Lanczos downsampling of the evaluation image (x4 per axis).


rule downsample:
    input:
        rules.prepare_evaluation_image.output.array,
    output:
        array=f"{R}/data/lr.npy",
        meta=f"{R}/data/lr.json",
    params:
        factor=config["downsample_factor"],
    log:
        f"{R}/logs/downsample.log",
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        ENV
    shell:
        "volinr downsample --input {input} --factor {params.factor} --out {output.array} 2> {log}"
