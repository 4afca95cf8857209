# Stage 9, rate-distortion: each fitted SIREN written as one real compressed file (weights
# quantized, entropy-coded, with everything the decoder needs), rebuilt from that file alone
# (plus the shared SR model it names by sha256), and evaluated with rates from the file's bytes.
# The classical codecs are swept on the same image at matched rates.

RD = config["rate_distortion"]
QUANTIZATIONS = RD["quantizations"]


rule compress_and_decompress:
    input:
        weights=lambda wc: f"{R}/fits/{FIT_TARGET[wc.kind]}/L{wc.layers}_s{wc.seed}/siren.pt",
        model=sr_model_for_kind,
        reference=EVAL,
    output:
        container=f"{R}/containers/{{kind}}/L{{layers}}_s{{seed}}_{{quant}}.volinr",
        array=f"{R}/recon/containers/{{kind}}/L{{layers}}_s{{seed}}_{{quant}}.npy",
        meta=f"{R}/recon/containers/{{kind}}/L{{layers}}_s{{seed}}_{{quant}}.json",
    log:
        f"{R}/logs/compress/{{kind}}_L{{layers}}_s{{seed}}_{{quant}}.log",
    conda:
        ENV
    threads: config["threads"]
    resources:
        gpu=1,
        mem_mb=mem_mb(2000),
    params:
        upsample=lambda wc: "sr" if wc.kind == "ours" else "none",
    shell:
        "python -m volinr compress --weights {input.weights} --quantization {wildcards.quant} "
        f"--coder {RD['coder']} --upsample {{params.upsample}} --reference {{input.reference}} "
        f"--z-restore {VOLUME['z_restore']} --sr-model '{{input.model}}' "
        "--out {output.container} 2> {log} && "
        "python -m volinr decompress --container {output.container} --sr-model '{input.model}' "
        f"{DECODE_ARGS} --out {{output.array}} {DEVICE_ARGS} 2>> {{log}}"


rule evaluate_container:
    input:
        reference=EVAL,
        reconstruction=rules.compress_and_decompress.output.array,
        container=rules.compress_and_decompress.output.container,
        record=lambda wc: f"{R}/fits/{FIT_TARGET[wc.kind]}/L{wc.layers}_s{wc.seed}/fit.json",
        model=sr_model_for_kind,
    output:
        metrics=f"{R}/metrics/containers/{{kind}}/L{{layers}}_s{{seed}}_{{quant}}.json",
        per_slice=f"{R}/metrics/containers/{{kind}}/L{{layers}}_s{{seed}}_{{quant}}.slices.csv",
    log:
        f"{R}/logs/evaluate_container/{{kind}}_L{{layers}}_s{{seed}}_{{quant}}.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=mem_mb(2000),
    params:
        label=lambda wc: as_json(
            {
                "method": f"{wc.kind} container",
                "layers": int(wc.layers),
                "seed": int(wc.seed),
                "quantization": wc.quant,
            }
        ),
        window=tissue_window(),
        amortize=RD["sr_amortize_over"],
    shell:
        "python -m volinr evaluate --reference {input.reference} "
        "--reconstruction {input.reconstruction} --container {input.container} "
        "--label {params.label} --fit-record {input.record} --sr-model '{input.model}' "
        "--sr-amortize-over {params.amortize} --tissue-window {params.window} "
        "--per-slice {output.per_slice} --out {output.metrics} 2> {log}"


rule codec_sweep:
    input:
        EVAL,
    output:
        f"{R}/codecs/sweep.csv",
    log:
        f"{R}/logs/codec_sweep.log",
    benchmark:
        f"{R}/benchmarks/codec_sweep.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=mem_mb(4000),
    shell:
        "python -m volinr codecs --input {input} --out {output} 2> {log}"


CONTAINER_METRICS = expand(
    rules.evaluate_container.output.metrics,
    kind=["ours", "baseline"],
    layers=LAYERS,
    seed=SEEDS,
    quant=QUANTIZATIONS,
)
CODEC_SWEEP = rules.codec_sweep.output if RD["codecs"] else []
