# Stage 6 (volume mode): the reconstructions of figures.seed written back as NIfTI and as a
# DICOM series with the original's geometry (new series, derived image type), to open beside
# the original in a viewer.


rule export_reconstruction:
    input:
        group=f"{R}/rd/{{method}}/L{{layers}}_s{{seed}}",
        geometry=f"{R}/data/eval.json",
    output:
        nifti=f"{R}/export/{{method}}/L{{layers}}_s{{seed}}.nii.gz",
        dicom=directory(f"{R}/export/{{method}}/L{{layers}}_s{{seed}}_dicom"),
    log:
        f"{R}/logs/export/{{method}}_L{{layers}}_s{{seed}}.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=mem_mb(2000),
    params:
        description=lambda wc: shlex.quote(
            f"volinr {methods.family(wc.method).label_name} {wc.layers} layers seed {wc.seed}"
        ),
    shell:
        "python -m volinr export --reconstruction {input.group}/float32.npy "
        "--geometry {input.geometry} --description {params.description} "
        "--nifti {output.nifti} --dicom {output.dicom} 2> {log}"
