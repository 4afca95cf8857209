"""Rate-distortion of the classical anchors on real CT: what one codestream per volume buys
JPEG 2000 over coding slice by slice, and where HTJ2K, JPEG XL, HEVC (12-bit) and AV1 (10-bit)
stand. A developer tool: the package never imports it.

    python benchmarks/anchors.py --headsq data/headsq/headsq.npy --out-dir benchmarks/results

Datasets: the embedded slice (pydicom-data 693_UNCR, 512x512, -3024..1468 HU), the headsq CT
volume (93x64x64 int16 raw scanner values 0..3926, spacing 1.5/3.2/3.2 mm; the path is an
argument) and the synthetic head phantom (48x96x96, seed 0). Every rate is 8 x the stream's
bytes / voxels; every stream is decoded from its bytes alone and measured against the
original (8-bit PSNR in the min..max window, native PSNR, SSIM, max error).
Writes anchors.json and anchors.md.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ANCHORS_3D = ["jpeg2000_per_slice", "jpeg2000", "htj2k", "jpegxl", "hevc", "av1"]
ANCHORS_2D = ["jpeg2000", "htj2k", "jpegxl", "hevc", "av1"]
MATCHED_RATES = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)  # bits per voxel
J2K_SOT = b"\xff\x90"  # start of tile-part: a J2K main header runs from SOC to here
HEVC_PARAMETER_SETS = {32, 33, 34}  # VPS, SPS, PPS NAL unit types


def settings_for(codecs, names: list[str], ndim: int):
    sweep = codecs.LOSSY_SWEEP_2D if ndim == 2 else codecs.LOSSY_SWEEP_3D
    settings = []
    for name in names:
        codec = codecs.CODECS[name]
        if codec.has_lossless:
            settings.append(codec.lossless_setting())
        parameters = sweep.get(name) or sweep[name.removesuffix("_per_slice")]
        settings += [codec.setting(parameter) for parameter in parameters]
    return settings


def psnr_at(rows: pd.DataFrame, bits: float) -> float:
    """A codec's 8-bit PSNR at ``bits`` per voxel, interpolated in log rate on its lossy
    points (the upper envelope); NaN outside them."""
    lossy = rows[~rows["lossless"]].sort_values("bits_per_voxel")
    rates = np.log(lossy["bits_per_voxel"].to_numpy(float))
    psnr = np.maximum.accumulate(lossy["psnr_8bit_minmax_db"].to_numpy(float))
    if len(rates) < 2 or not rates[0] <= math.log(bits) <= rates[-1]:
        return math.nan
    return float(np.interp(math.log(bits), rates, psnr))


def j2k_main_header_bytes(codestream: bytes) -> int:
    return codestream.index(J2K_SOT)


def hevc_parameter_set_bytes(elementary: bytes) -> int:
    """Bytes of the VPS, SPS and PPS NAL units (with their start codes) of an Annex-B stream."""
    starts = [i for i in range(len(elementary) - 3) if elementary[i : i + 3] == b"\0\0\1"]
    total = 0
    for index, start in enumerate(starts):
        end = starts[index + 1] if index + 1 < len(starts) else len(elementary)
        if (elementary[start + 3] >> 1) & 0x3F in HEVC_PARAMETER_SETS:
            total += end - start + 1  # + the zero byte of a 4-byte start code
    return total


def overheads(codecs, name: str, array: np.ndarray) -> dict:
    """What a variant pays besides its coded samples, measured on its lowest-rate setting."""
    from volinr.codecs.mosaic import plan
    from volinr.codecs.streams import ByteReader

    sweep = codecs.LOSSY_SWEEP_2D if array.ndim == 2 else codecs.LOSSY_SWEEP_3D
    parameter = (sweep.get(name) or sweep[name.removesuffix("_per_slice")])[0]
    setting = codecs.CODECS[name].setting(parameter)
    data = codecs.encode(array, setting)
    out = {"dataset_shape": "x".join(map(str, array.shape)), "codec": name,
           "lowest_setting": parameter, "bytes": len(data)}  # fmt: skip
    if name == "jpeg2000_per_slice":
        payloads = codecs.unframe_slices(data, array.shape[0])
        out["framing_bytes"] = 4 + 4 * len(payloads)
        out["codestream_headers_bytes"] = sum(j2k_main_header_bytes(bytes(p)) for p in payloads)
        out["codestreams"] = len(payloads)
    elif name == "jpeg2000":
        if array.ndim == 3:
            geometry = plan(array.shape, codecs.Jpeg2000.max_side, name)
            out["framing_bytes"] = len(geometry.header())
            body = data[len(geometry.header()) :]
        else:
            out["framing_bytes"], body = 0, data
        out["codestream_headers_bytes"] = j2k_main_header_bytes(body)
        out["codestreams"] = 1
    elif name == "hevc":
        reader = ByteReader(data, name)
        for _ in range(5):
            reader.varint()
        out["framing_bytes"] = reader.position
        out["codestream_headers_bytes"] = hevc_parameter_set_bytes(bytes(reader.rest()))
        out["codestreams"] = 1
    return out


def measure_dataset(codecs, label: str, array: np.ndarray, names: list[str]) -> pd.DataFrame:
    start = time.perf_counter()
    rows = codecs.run_sweep(array, settings_for(codecs, names, array.ndim), progress=False)
    print(f"{label}: {len(rows)} points in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    table = pd.DataFrame(rows)
    table.insert(0, "dataset", label)
    return table


def jpeg2000_layouts(codecs, label: str, array: np.ndarray) -> pd.DataFrame:
    """JPEG 2000 on a volume three ways at the 3D sweep's levels: the mosaic as the package
    codes it (unused tiles = the minimum), the mosaic with the unused tiles replicating the
    last slice, and one multi-component codestream (a component a slice, no transform)."""
    import imagecodecs

    from volinr import metrics
    from volinr.codecs import mosaic

    samples = np.rint(array).astype(np.int16)
    geometry = mosaic.plan(samples.shape, codecs.Jpeg2000.max_side, "jpeg2000")
    padded_count = math.ceil(len(samples) / geometry.grid_cols) * geometry.grid_cols
    replicated = np.concatenate([samples, np.repeat(samples[-1:], padded_count - len(samples), 0)])
    window = metrics.minmax_window(array)
    rows = []
    for level in codecs.LOSSY_SWEEP_3D["jpeg2000"]:
        options = dict(level=float(level), codecformat="J2K", reversible=False, numthreads=1)
        setting = codecs.CODECS["jpeg2000"].setting(level)
        data = codecs.encode(array, setting)
        variants = {
            "mosaic, unused tiles = minimum": (len(data), codecs.decode(data, setting, array.shape))
        }
        image = mosaic.tile(replicated, geometry.grid_cols, 0)
        stream = imagecodecs.jpeg2k_encode(image, **options)
        decoded = mosaic.untile(imagecodecs.jpeg2k_decode(stream), len(samples), *samples.shape[1:])
        variants["mosaic, unused tiles = last slice"] = (
            len(stream) + len(geometry.header()),
            decoded,
        )
        stream = imagecodecs.jpeg2k_encode(np.moveaxis(samples, 0, -1), mct=False, **options)
        decoded = np.moveaxis(imagecodecs.jpeg2k_decode(stream), -1, 0)
        variants["multi-component (a component a slice)"] = (len(stream), decoded)
        for layout, (size, decoded) in variants.items():
            psnr = metrics.psnr_8bit(array, decoded, window)
            rate = 8 * size / array.size
            rows.append({"dataset": label, "level": level, "layout": layout,
                         "bits_per_voxel": rate, "psnr_8bit_minmax_db": psnr})  # fmt: skip
    return pd.DataFrame(rows)


def layout_table(layouts: pd.DataFrame) -> pd.DataFrame:
    """One row per dataset and level: each layout's "bits per voxel / dB", and the PSNR the
    package's mosaic reaches at that layout's rate (interpolated in log rate)."""
    reference = "mosaic, unused tiles = minimum"
    rows = []
    for (dataset, level), group in layouts.groupby(["dataset", "level"], sort=False):
        curve = layouts[(layouts["dataset"] == dataset) & (layouts["layout"] == reference)]
        curve = curve.assign(lossless=False)
        row = {"dataset": dataset, "level": level}
        for _, point in group.iterrows():
            cell = f"{point['bits_per_voxel']:.4g} / {point['psnr_8bit_minmax_db']:.2f}"
            if point["layout"] != reference:
                at_rate = psnr_at(curve, point["bits_per_voxel"])
                cell += f" (mosaic: {at_rate:.2f})"
            row[point["layout"]] = cell
        rows.append(row)
    return pd.DataFrame(rows)


def matched(table: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (dataset, codec), group in table.groupby(["dataset", "codec"], sort=False):
        row = {"dataset": dataset, "codec": codec}
        row.update({f"psnr_db_at_{bits:g}_bpv": psnr_at(group, bits) for bits in MATCHED_RATES})
        lossy = group[~group["lossless"]]
        row["lowest_bits_per_voxel"] = float(lossy["bits_per_voxel"].min())
        rows.append(row)
    return pd.DataFrame(rows)


def mapping_ceiling_db(array: np.ndarray, bits: int) -> float:
    """Native PSNR of the HU -> N-bit mapping alone (mapped and back, no coding)."""
    from volinr import metrics
    from volinr.codecs.video import SampleMapping

    mapping = SampleMapping.of(array, bits)
    return metrics.psnr_native(array, mapping.to_hu(mapping.to_samples(array)))


def what_each_variant_pays(
    table: pd.DataFrame, costs: pd.DataFrame, codecs, datasets: dict
) -> list[str]:
    """The results file's paragraph, every number taken from the measurements."""
    lines = ["## What each variant pays", ""]
    head = table[table["dataset"] == "headsq"]
    per_slice = costs[(costs["codec"] == "jpeg2000_per_slice") & (costs["dataset"] == "headsq")]
    one = costs[(costs["codec"] == "jpeg2000") & (costs["dataset"] == "headsq")]
    if len(per_slice) and len(one):
        p, o = per_slice.iloc[0], one.iloc[0]
        floor_p = head[head["codec"] == "jpeg2000_per_slice"]["bits_per_voxel"].min()
        floor_o = head[head["codec"] == "jpeg2000"]["bits_per_voxel"].min()
        lines.append(
            f"- **JPEG 2000 per slice** (`jpeg2000_per_slice`) pays, on headsq at its lowest "
            f"setting ({p['lowest_setting']:g}), {p['bytes']:,} bytes: {p['framing_bytes']} of "
            f"framing (slice count and lengths), {p['codestream_headers_bytes']:,} of "
            f"codestream main headers ({p['codestream_headers_bytes'] / p['codestreams']:.0f} "
            "a slice), "
            f"and each slice's minimum payload: its rate cannot go below "
            f"{floor_p:.3f} bits per voxel."
        )
        lines.append(
            f"- **JPEG 2000, one codestream** (`jpeg2000`, the volume tiled into a mosaic) pays "
            f"{o['framing_bytes']} bytes of geometry and one main header "
            f"({o['codestream_headers_bytes']} bytes): {o['bytes']:,} bytes at the same "
            f"setting, a floor of {floor_o:.4f} bits per voxel. The constant tiles that fill "
            "the mosaic's last row cost almost nothing and are not decoded into the volume."
        )
    hevc_cost = costs[(costs["codec"] == "hevc") & (costs["dataset"] == "headsq")]
    if len(hevc_cost):
        h = hevc_cost.iloc[0]
        lines.append(
            f"- **HEVC** pays {h['framing_bytes']} bytes of header (shape and the HU -> 12-bit "
            f"mapping) and {h['codestream_headers_bytes']} bytes of VPS/SPS/PPS, once per "
            "volume; x265's 2 kB version SEI is switched off. It codes 12-bit samples: a range "
            "wider than 4,095 HU is scaled (the stated step is in `sample_mapping`), and that "
            "error is in every metric."
        )
    ceilings = []
    for dataset, group in table[table["codec"] == "av1"].groupby("dataset", sort=False):
        best = group.loc[group["psnr_native_db"].idxmax()]
        ceilings.append(
            f"{dataset} {best['psnr_native_db']:.1f} dB at {best['bits_per_voxel']:.2f} bits "
            f"per voxel (the mapping alone: {mapping_ceiling_db(datasets[dataset], 10):.1f} dB)"
        )
    lines.append(
        "- **AV1** (SVT-AV1) codes 10-bit 4:2:0 only: the range is scaled to 10 bits on CT "
        "(see the mappings below), the constant chroma planes cost a few bytes, and there is "
        "no lossless setting. The 10 bits do not limit it where the sweep runs: its best "
        f"native PSNR is {'; '.join(ceilings)}."
    )
    lines.append(
        "- **HTJ2K and JPEG XL** code the same mosaic as JPEG 2000 (one codestream a volume); "
        "JPEG XL and JPEG-LS take unsigned samples, so their streams start with the 2-byte "
        "minimum they subtracted."
    )
    lines += ["", "The video codecs' sample mappings, as each sweep row states them:", ""]
    for dataset in table["dataset"].unique():
        mapping = table[(table["dataset"] == dataset) & (table["codec"].isin(["hevc", "av1"]))]
        for codec, text in mapping.groupby("codec", sort=False)["sample_mapping"].first().items():
            lines.append(f"- {dataset}, {codec}: `{text}`")
    lossless = table[table["lossless"]].pivot_table(
        index="codec", columns="dataset", values="bits_per_voxel", sort=False
    )
    lines += [
        "",
        "Lossless bits per voxel (empty: no lossless row; HEVC's lossless mode needs a range "
        "within 12 bits, AV1 has none, and a slice has no per-slice variant):",
        "",
        lossless.to_markdown(floatfmt=".3f"),
    ]
    return lines


def strict_json(value):
    """Non-finite floats as JSON null (NaN: outside a sweep), so the file is strict JSON."""
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(item) for item in value]
    if isinstance(value, float | np.floating) and not math.isfinite(value):
        return None
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--headsq", default="data/headsq/headsq.npy", help="headsq.npy path")
    parser.add_argument("--out-dir", default="benchmarks/results")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from volinr import codecs, provenance
    from volinr.data.dicom_frames import read_frame
    from volinr.data.phantom import synthetic_head_phantom
    from volinr.tools.bench import write_benchmark

    datasets = {
        "693_UNCR slice": read_frame("pydicom-data:693_UNCR.dcm").pixels,
        "headsq": np.load(args.headsq, allow_pickle=False),
        "phantom 48x96x96": synthetic_head_phantom((48, 96, 96), seed=0).voxels,
    }
    load_before = os.getloadavg()[0]
    table = pd.concat(
        [
            measure_dataset(codecs, label, array, ANCHORS_2D if array.ndim == 2 else ANCHORS_3D)
            for label, array in datasets.items()
        ],
        ignore_index=True,
    )
    costs = pd.DataFrame(
        [
            {"dataset": label, **overheads(codecs, name, array)}
            for label, array in datasets.items()
            for name in (
                ["jpeg2000", "hevc"]
                if array.ndim == 2
                else ["jpeg2000_per_slice", "jpeg2000", "hevc"]
            )
        ]
    )
    versus = matched(table)
    layouts = pd.concat(
        [jpeg2000_layouts(codecs, label, a) for label, a in datasets.items() if a.ndim == 3],
        ignore_index=True,
    )
    command = f"python benchmarks/anchors.py --headsq {args.headsq}"
    meta = {
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
        "datasets": {label: list(array.shape) for label, array in datasets.items()},
        "command": command,
        "versions": provenance.versions(),
        "git_commit": provenance.git_commit(),
        "matched_rates": list(MATCHED_RATES),
        "overheads": costs.to_dict(orient="records"),
        "psnr_at_matched_rates": strict_json(versus.to_dict(orient="records")),
        "jpeg2000_layouts": layouts.to_dict(orient="records"),
    }
    table["parameter"] = table["parameter"].map(lambda p: "lossless" if pd.isna(p) else f"{p:g}")
    for column in ("psnr_8bit_minmax_db", "psnr_native_db"):  # lossless: "inf", strict JSON
        table[column] = table[column].map(lambda db: db if math.isfinite(db) else "inf")
    preamble = [
        "# Classical anchors: rate-distortion on real CT",
        "",
        f"`{command}` on {meta['machine']} ({meta['cpu_count']} CPUs, shared; 1-minute load "
        f"{load_before:.2f} before, {meta['load_average_1min']['after']:.2f} after), commit "
        f"{meta['git_commit']}. Every codec runs on one thread. Bits per voxel: 8 x the "
        "stream's bytes (everything the decoder needs) / voxels. PSNR 8-bit: both images "
        "windowed to 8 bits over the original's min..max (`volinr.metrics.psnr_8bit`); native: "
        "peak = max - min. Seconds vary by tens of percent on this shared machine.",
        "",
        "## 8-bit PSNR (dB) at matched rates",
        "",
        "Interpolated in log rate on each codec's lossy points (upper envelope); empty: "
        "outside its sweep.",
        "",
        versus.to_markdown(index=False, floatfmt=[""] * 2 + [".2f"] * len(MATCHED_RATES) + [".4f"]),
        "",
        *what_each_variant_pays(table, costs, codecs, datasets),
        "",
        "## JPEG 2000 on a volume: mosaic or multi-component, and what fills the mosaic",
        "",
        "The package tiles a volume into one mosaic image and fills the unused tiles of its "
        "last row with the volume's minimum. The alternatives, at the same OpenJPEG levels "
        "(bits per voxel / 8-bit PSNR dB; in brackets the PSNR the package's mosaic reaches at "
        "that rate):",
        "",
        layout_table(layouts).to_markdown(index=False),
        "",
        "## Every point",
        "",
    ]
    columns = ["dataset", "codec", "parameter", "bytes", "bits_per_voxel",
               "psnr_8bit_minmax_db", "psnr_native_db", "ssim", "max_abs_error_hu",
               "encode_seconds", "decode_seconds"]  # fmt: skip
    table = table.astype(object).where(table.notna(), None)  # no bound: null, strict JSON
    write_benchmark(table, meta, columns, preamble, Path(args.out_dir), "anchors")
    print("\n".join(preamble[:-3]))


if __name__ == "__main__":
    main()
