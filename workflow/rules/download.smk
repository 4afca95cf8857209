# Stage 0 (volume mode, dataset.kind download): fetch the configured archives, verify their
# sha256, extract them safely. Downloaded files stay in archives/ so a rerun resumes.


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
