"""Where images come from: DICOM frames and series, NIfTI, the synthetic phantom and
downloads, each read into HU with its geometry; and where reconstructions go (export)."""
