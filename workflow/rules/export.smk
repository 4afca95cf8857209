# Stage 8 (volume mode): the reconstructed volumes written back as NIfTI and as a DICOM series
# with the original's geometry (new series, derived image type), to open beside the original.


rule export_reconstruction:
    input:
        reconstruction=f"{R}/recon/{{kind}}/L{{layers}}_s{{seed}}/hr.npy",
        geometry=f"{R}/data/eval.json",
    output:
        nifti=f"{R}/export/{{kind}}/L{{layers}}_s{{seed}}.nii.gz",
        dicom=directory(f"{R}/export/{{kind}}/L{{layers}}_s{{seed}}_dicom"),
    log:
        f"{R}/logs/export/{{kind}}_L{{layers}}_s{{seed}}.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=mem_mb(2000),
    params:
        description=lambda wc: shlex.quote(
            f"volinr {'SIREN LR + SRDenseNet' if wc.kind == 'ours' else 'SIREN HR'} "
            f"{wc.layers} layers seed {wc.seed}"
        ),
    shell:
        "python -m volinr export --reconstruction {input.reconstruction} "
        "--geometry {input.geometry} --description {params.description} "
        "--nifti {output.nifti} --dicom {output.dicom} 2> {log}"


EXPORTS = (
    expand(
        rules.export_reconstruction.output,
        kind=["ours", "baseline"],
        layers=LAYERS,
        seed=FIGURE_SEED,
    )
    if VOLUME_MODE
    else []
)
