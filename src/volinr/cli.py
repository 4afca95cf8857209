"""`volinr <stage>`: argument parsing, and the table of which function runs each subcommand.

Every Snakemake rule is a call of one of these subcommands, so every stage also runs by hand.
The stage functions are thin adapters grouped by job in ``volinr.stages``; the developer tools
(benchmarks, publishing, the README) are ``volinr-dev`` (``volinr.tools.cli``).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence

from volinr import arguments as a
from volinr import settings
from volinr.cli_report import add_report_commands

log = logging.getLogger("volinr")


# subcommand -> "module:function"; the module is imported only when its subcommand runs
SUBCOMMANDS = {
    "prepare": "volinr.stages.data:run_prepare",
    "prepare-volume": "volinr.stages.data:run_prepare_volume",
    "download": "volinr.stages.data:run_download",
    "sr-dataset": "volinr.stages.data:run_sr_dataset",
    "downsample": "volinr.stages.data:run_downsample",
    "export": "volinr.stages.data:run_export",
    "pretrain-sr": "volinr.stages.sr:run_pretrain_sr",
    "upsample": "volinr.stages.sr:run_upsample",
    "fit": "volinr.stages.siren:run_fit",
    "decode": "volinr.stages.siren:run_decode",
    "compress": "volinr.stages.siren:run_compress",
    "decompress": "volinr.stages.siren:run_decompress",
    "evaluate": "volinr.stages.evaluate:run_evaluate",
    "rd": "volinr.stages.methods:run_rd",
    "codecs": "volinr.stages.methods:run_codecs",
    "tables": "volinr.stages.report:run_tables",
    "rate-distortion": "volinr.stages.report:run_rate_distortion",
    "figures": "volinr.stages.report:run_figures",
    "summary": "volinr.stages.report:run_summary",
    "suite-report": "volinr.stages.report:run_suite_report",
}


def stage_function(table: Mapping[str, str], command: str) -> Callable:
    import importlib

    module, name = table[command].split(":")
    return getattr(importlib.import_module(module), name)


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads", type=a.non_negative_int, default=0, help="CPU threads for torch (0: default)"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("-v", "--verbose", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="volinr", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="read a DICOM image into an array (HU) with a JSON sidecar")
    p.add_argument("--source", required=True, help="path, pydicom-data:NAME or pydicom:NAME")
    p.add_argument("--frame", type=a.non_negative_int, default=0)
    p.add_argument(
        "--out", type=a.output_file, required=True, help="output .npy (sidecar .json beside it)"
    )

    p = sub.add_parser(
        "prepare-volume",
        help="read a volume (DICOM series, NIfTI, .npy array, phantom) and its evaluated slab",
    )
    p.add_argument("--spec", type=a.json_object, required=True, help="the dataset config (JSON)")
    p.add_argument(
        "--evaluation-slices",
        type=a.non_negative_int,
        nargs=2,
        default=None,
        metavar=("START", "STOP"),
    )
    p.add_argument(
        "--factor", type=a.positive_int, default=4, help="checked: the slab must allow it"
    )
    p.add_argument(
        "--volume-out", type=a.output_file, required=True, help="the whole volume (.npy + .json)"
    )
    p.add_argument(
        "--out", type=a.output_file, default="", help="the evaluated slab (.npy + .json)"
    )

    p = sub.add_parser("download", help="fetch, verify and safely extract a dataset's archives")
    p.add_argument("--url", action="append", required=True)
    p.add_argument("--sha256", action="append", default=[], help="one per URL, in order")
    p.add_argument(
        "--out-dir", type=a.output_dir, required=True, help="the extracted dataset folder"
    )
    p.add_argument(
        "--downloads-dir",
        type=a.output_dir,
        required=True,
        help="downloaded files (kept for resuming)",
    )
    p.add_argument("--max-member-bytes", type=a.positive_int, default=4 << 30)
    p.add_argument(
        "--manifest", type=a.output_file, required=True, help="output JSON: files, sizes, checksums"
    )

    p = sub.add_parser("compress", help="write a fitted SIREN as one compressed container file")
    p.add_argument("--weights", required=True, help="a SIREN weights file from `volinr fit`")
    p.add_argument(
        "--quantization",
        type=a.quantization,
        default="float32",
        help="float32, float16 or qK (K bits)",
    )
    p.add_argument("--coder", choices=["zstd", "lzma", "none"], default="zstd")
    p.add_argument(
        "--upsample",
        choices=["none", "sr", "lanczos", "bicubic"],
        default="none",
        help="what the decoder does after the SIREN: none (the SIREN's grid is the output)",
    )
    p.add_argument("--reference", default="", help="the full-resolution array (its grid)")
    p.add_argument("--z-restore", choices=["lanczos", "sr-coronal"], default="lanczos")
    p.add_argument("--sr-model", default="", help="the SR model the decoder needs (its sha256)")
    p.add_argument("--out", type=a.output_file, required=True)

    p = sub.add_parser("decompress", help="rebuild the image or volume from a container file")
    p.add_argument("--container", required=True)
    p.add_argument("--sr-model", default="", help="the SR model the container names")
    p.add_argument("--chunk-voxels", type=a.positive_int, default=1 << 18)
    p.add_argument("--out", type=a.output_file, required=True)
    add_common(p)

    p = sub.add_parser("export", help="write a reconstructed volume as NIfTI and a DICOM series")
    p.add_argument("--reconstruction", required=True)
    p.add_argument("--geometry", required=True, help="the original's sidecar JSON")
    p.add_argument("--description", required=True, help="SeriesDescription of the new series")
    p.add_argument("--nifti", type=a.output_file, required=True)
    p.add_argument(
        "--dicom", type=a.output_dir, required=True, help="output folder of the DICOM series"
    )

    p = sub.add_parser("sr-dataset", help="collect SR training images, excluding the eval image")
    p.add_argument("--eval", required=True, help="the prepared evaluation array (.npy)")
    p.add_argument("--source", action="append", default=[], help="a DICOM training source")
    p.add_argument("--volume", default="", help="a volume whose axial slices train SR")
    p.add_argument(
        "--exclude-slices",
        type=a.non_negative_int,
        nargs=2,
        default=None,
        metavar=("START", "STOP"),
        help="the evaluated slab of --volume: never trained on, nor --margin slices around it",
    )
    p.add_argument("--margin", type=a.non_negative_int, default=0)
    p.add_argument("--max-correlation", type=a.unit_interval, default=0.5)
    p.add_argument(
        "--out", type=a.output_file, required=True, help="output .npz of training images"
    )
    p.add_argument(
        "--split", type=a.output_file, required=True, help="output JSON recording the split"
    )

    p = sub.add_parser("downsample", help="antialiased Lanczos downsampling by a factor per axis")
    p.add_argument("--input", required=True)
    p.add_argument("--factor", type=a.positive_int, default=4)
    p.add_argument("--out", type=a.output_file, required=True)

    p = sub.add_parser("pretrain-sr", help="train SRDenseNet, or reuse a verified checkpoint")
    p.add_argument("--training", required=True, help=".npz from sr-dataset")
    p.add_argument("--split", required=True, help="split JSON from sr-dataset")
    p.add_argument("--factor", type=a.positive_int, default=4)
    p.add_argument("--model", type=a.json_object, required=True, help="SRDenseNet settings (JSON)")
    p.add_argument("--settings", type=a.json_object, required=True, help="training settings (JSON)")
    p.add_argument("--pretrained", default="", help="a checkpoint to reuse when it matches")
    p.add_argument("--pretrained-sha256", default="")
    p.add_argument("--retrain", action="store_true", help="train even if the checkpoint matches")
    p.add_argument("--out", type=a.output_file, required=True)
    p.add_argument("--curve", type=a.output_file, required=True, help="training curve CSV")
    add_common(p)

    p = sub.add_parser(
        "fit",
        help="fit a SIREN to an array; writes weights, curve and records",
        description="Every siren setting has an option (its default: --settings, else the config "
        "schema's); the workflow passes the config's validated siren section as --settings.",
    )
    p.add_argument("--target", required=True)
    p.add_argument(
        "--sine-layers", type=a.positive_int, required=True, help="the paper's '2/3/4 layers'"
    )
    p.add_argument("--seed", type=a.non_negative_int, default=0)
    settings.add_section_options(p, "siren", skip=("baseline_iterations",))
    p.add_argument(
        "--resume", default="", help="resume checkpoint file (default: WEIGHTS.resume.pt)"
    )
    p.add_argument("--weights", type=a.output_file, required=True, help="output SIREN weights file")
    p.add_argument("--record", type=a.output_file, required=True, help="output JSON of the fit")
    p.add_argument(
        "--curve", type=a.output_file, required=True, help="output CSV of loss and PSNR curves"
    )
    add_common(p)

    p = sub.add_parser("decode", help="evaluate a fitted SIREN on its grid (or another shape)")
    p.add_argument("--weights", required=True)
    p.add_argument(
        "--shape", type=a.positive_int, nargs="+", default=None, help="default: the fit's grid"
    )
    p.add_argument("--like", default="", help="a sidecar JSON whose geometry the output keeps")
    p.add_argument("--chunk-voxels", type=a.positive_int, default=1 << 18, help="bounds memory")
    p.add_argument("--out", type=a.output_file, required=True)
    add_common(p)

    p = sub.add_parser("upsample", help="restore full resolution: SRDenseNet, lanczos or bicubic")
    p.add_argument("--input", required=True)
    p.add_argument("--method", choices=["sr", "lanczos", "bicubic"], required=True)
    p.add_argument("--sr-model", default="", help="SRDenseNet checkpoint (method sr)")
    p.add_argument("--reference", required=True, help="the full-resolution array (for its grid)")
    p.add_argument(
        "--z-restore",
        choices=["lanczos", "sr-coronal"],
        default="lanczos",
        help="volumes, method sr: how the slice axis is restored after in-plane SR",
    )
    p.add_argument("--out", type=a.output_file, required=True)
    add_common(p)

    p = sub.add_parser("evaluate", help="quality and size of a reconstruction against the original")
    p.add_argument("--reference", required=True, help="the original full-resolution array")
    p.add_argument("--reconstruction", required=True)
    p.add_argument("--label", type=a.json_object, required=True, help="identifying fields (JSON)")
    p.add_argument("--fit-record", action="append", default=[], help="fit JSON(s) it comes from")
    p.add_argument("--sr-model", default="", help="SR checkpoint whose bytes the decoder needs")
    p.add_argument("--lr-reference", default="", help="the true LR array (LR-fit quality)")
    p.add_argument(
        "--stored-array",
        default="",
        help="an array the decoder needs (e.g. the LR image), counted at the bytes of the "
        "smallest lossless codec that stores it exactly",
    )
    p.add_argument("--lr-reconstruction", default="", help="the decoded LR array")
    add_tissue_window(p)
    p.add_argument(
        "--per-slice", type=a.output_file, default="", help="a CSV of per-slice PSNR and SSIM"
    )
    p.add_argument("--container", default="", help="the container file the image came from")
    p.add_argument(
        "--sr-amortize-over",
        type=a.positive_int,
        default=100,
        help="volumes sharing the SR model, for the amortized rate",
    )
    p.add_argument("--out", type=a.output_file, required=True)

    p = sub.add_parser("tables", help="paper-vs-ours tables (CSV + Markdown)")
    p.add_argument("--metrics", nargs="+", required=True, help="evaluate JSON files")
    p.add_argument("--published", required=True, help="the paper's numbers (YAML)")
    p.add_argument(
        "--verdict-margin-db",
        type=a.non_negative_float,
        default=0.5,
        help="the smallest best-PSNR margin a Table 6 verdict needs (else: not resolved)",
    )
    p.add_argument(
        "--replicates",
        default="",
        help="a replicate run's per-seed PSNRs (volinr-dev replicate-reference): their 95%% "
        "intervals beside Table 6's PSNRs where image and iterations match",
    )
    p.add_argument(
        "--mode",
        choices=["slice", "volume"],
        default="slice",
        help="volume: the paper's slice numbers do not apply and print as n/a",
    )
    p.add_argument("--out-dir", type=a.output_dir, required=True)

    p = sub.add_parser("rate-distortion", help="rate-distortion table and figure, all methods")
    p.add_argument("--rows", nargs="+", required=True, help="method groups' rows (volinr rd)")
    p.add_argument("--published", required=True, help="the paper's numbers (YAML)")
    p.add_argument("--mode", choices=["slice", "volume"], default="slice")
    p.add_argument("--sr-amortize-over", type=a.positive_int, default=100)
    p.add_argument("--out-dir", type=a.output_dir, required=True, help="tables folder")
    p.add_argument("--figure", type=a.output_file, required=True, help="output PNG")

    p = sub.add_parser(
        "rd",
        help="one method's group of operating points: files, decodes and metrics",
        description="Encode the image at every operating point of one group of a method into "
        "a file, decode each file from its bytes alone (plus the method's shared assets), and "
        "measure every reconstruction; rates come from the files' sizes.",
    )
    p.add_argument("--method", required=True, help="a method family (volinr.methods)")
    p.add_argument("--group", required=True, help="one of its groups (e.g. L2_s0, jpeg2000)")
    p.add_argument("--image", required=True, help="the original array (.npy + sidecar)")
    p.add_argument(
        "--settings", type=a.json_object, required=True, help="the method's config sections (JSON)"
    )
    p.add_argument(
        "--inputs", type=a.json_object, default={}, help="the group's input files by name (JSON)"
    )
    add_tissue_window(p)
    p.add_argument("--sr-amortize-over", type=a.positive_int, default=100)
    p.add_argument(
        "--keep-reconstruction",
        action="store_true",
        help="also write the paper point's reconstruction (.npy) beside its file",
    )
    p.add_argument("--files-dir", type=a.files_dir, required=True, help="the points' files")
    p.add_argument("--out", type=a.output_file, required=True, help="output JSON of the rows")
    add_common(p)

    p = sub.add_parser("codecs", help="sweep classical codecs over rates on an image or volume")
    p.add_argument("--input", required=True, help="the full-resolution array (.npy)")
    p.add_argument(
        "--out", type=a.output_file, required=True, help="output CSV, one row per codec setting"
    )

    add_report_commands(sub)

    return parser


class Terminated(BaseException):
    """SIGTERM, raised so that every ``finally`` block (temporary files) runs before exit."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated


def add_tissue_window(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tissue-window", type=a.finite_or_nan, nargs=2,
                   default=[-1024.0, float("nan")],
                   help="the second 8-bit window (nan high: the image max)")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    passive_thread_waits()
    return run(build_parser(), SUBCOMMANDS, argv)


def passive_thread_waits() -> None:
    """OpenMP threads that sleep at barriers, not spin: beside a busy process a spinning thread
    holds the core its partner needs (benchmarks/results/thread_policy_wait.md). Before torch
    loads; a value of the user's (an empty one: the runtime's default) is kept."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def run(
    parser: argparse.ArgumentParser, table: Mapping[str, str], argv: Sequence[str] | None
) -> int:
    """Run one subcommand; exit status 0, 2 (bad input or an unwritable output, named),
    3 (numerical failure), 130 (Ctrl-C) or 143 (SIGTERM): never a traceback for those."""
    from volinr.errors import InputError
    from volinr.outputs import atomic_outputs, os_error_message

    args = parser.parse_args(argv)
    problem = a.check_paths(args)
    if problem:
        parser.error(problem)
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None
    try:
        stage = stage_function(table, args.command)
        # all of a stage's outputs, or none of them
        with atomic_outputs():
            stage(args)
    except InputError as err:
        log.error("%s", err)
        return 2
    except OSError as err:  # a file the user named cannot be read or written
        log.error("%s", os_error_message(err))
        return 2
    except FloatingPointError as err:
        log.error("numerical failure: %s", err)
        return 3
    except KeyboardInterrupt:
        log.error("interrupted; the %s outputs were not written", args.command)
        return 130
    except Terminated:
        log.error("terminated (SIGTERM); the %s outputs were not written", args.command)
        return 128 + signal.SIGTERM
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
    return 0
