"""What every stage adapter shares: the device and thread count from the command line."""

from __future__ import annotations

from volinr.errors import InputError


def device_from_args(args):
    from volinr.devices import resolve_device, set_threads

    set_threads(args.threads)
    try:
        return resolve_device(args.device)
    except RuntimeError as err:
        raise InputError(f"--device {args.device}: {err}") from None
