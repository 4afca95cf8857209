"""Stages of the super-resolution network: pretraining (or verified reuse of the committed
checkpoint) and upsampling an image by SR, Lanczos or bicubic.
"""

from __future__ import annotations

import logging
import math
import shutil
import time

from volinr import provenance
from volinr.errors import InputError
from volinr.io import (
    load_image,
    save_array,
    write_csv,
)
from volinr.outputs import atomic_path
from volinr.stages.common import device_from_args
from volinr.super_resolution import upsample_array

log = logging.getLogger(__name__)


def _sr_settings(args):
    """The SR training settings and architecture of the command line, checked before any work."""
    from volinr.checkpoints import architecture_shapes
    from volinr.models.srdensenet import SRDenseNet
    from volinr.training.sr import SRTrainingSettings

    try:
        settings = SRTrainingSettings(**args.settings)
        architecture_shapes(SRDenseNet, dict(args.model, scale=args.factor), 10_000)
    except (TypeError, ValueError) as err:
        raise InputError(f"--settings {args.settings} / --model {args.model}: {err}") from None
    bad = [
        f"{name} {value!r}"
        for name, value in vars(settings).items()
        if isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and name not in ("max_seconds", "seed"))
    ]
    if bad:
        raise InputError(f"--settings: {', '.join(bad)} (each must be a finite positive number)")
    return settings


def run_pretrain_sr(args) -> None:
    from volinr.data.sr_dataset import read_split, read_training_images
    from volinr.super_resolution import save_sr_checkpoint
    from volinr.training.sr import (
        PatchPairs,
        checkpoint_reuse_reason,
        settings_dict,
        train_srdensenet_retrying,
    )

    # What to do on divergence is not a training setting: it changes nothing in a run that
    # converges, so it stays out of the settings a committed checkpoint is matched against.
    args.settings = dict(args.settings)
    retries = int(args.settings.pop("divergence_retries", 0))
    lr_factor = float(args.settings.pop("divergence_lr_factor", 0.5))
    settings = _sr_settings(args)
    split = read_split(args.split)
    reason = checkpoint_reuse_reason(args, split)
    if reason is None:
        from volinr.super_resolution import load_sr_checkpoint

        log.info("reusing the pretrained checkpoint %s (sha256 verified)", args.pretrained)
        _, payload = load_sr_checkpoint(args.pretrained)
        with atomic_path(args.out) as tmp:
            shutil.copyfile(args.pretrained, tmp)
        write_csv(args.curve, payload["curve"], provenance.record(args))
        return
    log.info("training SRDenseNet: %s", reason)
    device = device_from_args(args)
    pairs = PatchPairs.from_hr_images(read_training_images(args.training), args.factor)
    run = train_srdensenet_retrying(
        pairs, args.model, settings, device,
        divergence_retries=retries, divergence_lr_factor=lr_factor,
    )  # fmt: skip
    model, curve = run.model, run.curve
    training = {
        "settings": settings_dict(settings),
        "split": split,
        "steps_done": curve[-1]["step"],
        "seconds": curve[-1]["seconds"],
        "divergence_retries": retries,
        "divergence_lr_factor": lr_factor,
        "divergence_retries_used": run.divergence_retries_used,
        "learning_rate_used": run.learning_rate,
        "channels_last": run.execution.channels_last,
        "precision": run.execution.precision,
        "provenance": provenance.record(args, device),
    }
    save_sr_checkpoint(args.out, model, training, curve)
    write_csv(args.curve, curve, training["provenance"])


def run_upsample(args) -> None:
    low, _ = load_image(args.input)
    reference, reference_meta = load_image(args.reference)
    device = device_from_args(args) if args.method == "sr" else None
    start = time.perf_counter()
    high = upsample_array(low, reference.shape, args.method, args.sr_model, device, args.z_restore)
    seconds = time.perf_counter() - start
    geometry = {k: v for k, v in reference_meta.items() if k not in ("shape", "dtype", "sha256")}
    save_array(
        args.out,
        high,
        geometry
        | {
            "upsampled_from": str(args.input),
            "method": args.method,
            "z_restore": args.z_restore if args.method == "sr" and low.ndim == 3 else None,
            "sr_model": args.sr_model or None,
            "decode_seconds": seconds,
            "provenance": provenance.record(args, device),
        },
    )
