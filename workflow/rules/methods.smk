# Stage 4, the benchmark: every configured method (rate_distortion.methods), one job per group
# of its operating points. Each point is written as a real file, decoded from its bytes alone
# (plus the shared SR model where the method needs it) and measured with the same metrics.
# Methods that run torch use the same rule under another name, holding the gpu resource (and,
# on SLURM, the GPU partition: see profiles/slurm).


rule method_points:
    input:
        unpack(method_group_inputs),
    output:
        rows=f"{R}/rd/{{method}}/{{group}}.json",
        files=directory(f"{R}/rd/{{method}}/{{group}}"),
    log:
        f"{R}/logs/rd/{{method}}_{{group}}.log",
    benchmark:
        f"{R}/benchmarks/rd/{{method}}_{{group}}.tsv"
    wildcard_constraints:
        method="|".join(CPU_METHODS) or "(?!)",
    conda:
        ENV
    threads: method_threads
    resources:
        mem_mb=mem_mb(4000),
    params:
        settings=method_settings_json,
        inputs=method_inputs_json,
        window=tissue_window(),
        amortize=RD["sr_amortize_over"],
        keep=lambda wc: "--keep-reconstruction" if keeps_reconstruction(wc) else "",
        device=method_device,
    shell:
        "python -m volinr rd --method {wildcards.method} --group {wildcards.group} "
        "--image {input.image} --settings {params.settings} --inputs {params.inputs} "
        "--tissue-window {params.window} --sr-amortize-over {params.amortize} {params.keep} "
        "--files-dir {output.files} --out {output.rows} --device {params.device} "
        "--threads {threads} 2> {log}"


use rule method_points as method_points_torch with:
    wildcard_constraints:
        method="|".join(TORCH_METHODS) or "(?!)",
    threads: config["threads"]
    resources:
        gpu=1,
        slurm_partition=GPU_PARTITION,
        mem_mb=mem_mb(4000),
