"""An overfitted neural codec for CT slices and volumes (Cool-chic / C3 family).

One image (2D) or volume (3D) is coded by training, for it alone, multi-resolution latent
grids, a small synthesis network and an autoregressive entropy model, for rate and
distortion at one lambda; the quantised latents and network parameters are range-coded
(constriction) into a volinr container of format version 2.

    from volinr.neural_codec import CodecSettings, decode, encode

    encoded = encode(hu, spacing_mm=(0.7, 0.7), settings=CodecSettings.make(), lam=4e-4, seed=0)
    encoded.data            # the file's bytes
    encoded.reconstruction  # what decode(encoded.data) returns, bit for bit
    encoded.record          # training curve, bits by part (estimated and actual), seconds
    decode(encoded.data, source="slice.vnc")

Modules, one job each:

- ``settings``: ``CodecSettings``, the architecture and training knobs, validated;
- ``geometry``: grid shapes, causal context offsets, the decoding wavefront;
- ``model``: latent grids, upsampling, synthesis, float entropy model (training);
- ``blocked``: the per-voxel MLPs' forward and backward, block by block (CPU training step);
- ``laplace``: the rate in float (training) and the integer probability tables (coding);
- ``training``: the rate-distortion loop (noise, soft rounding, straight-through);
- ``network_quantisation``: each tensor's quantisation step, by rate-distortion cost;
- ``parameter_coding`` / ``latent_coding``: range coding of parameters / latents, the
  latter through the fixed-point entropy model;
- ``bitstream``: the binary header and the file's framing (magic, version, lengths, CRC-32);
- ``codec``: ``encode`` and ``decode``.
"""

from volinr.neural_codec.codec import Encoded, decode, encode
from volinr.neural_codec.settings import CodecSettings

__all__ = ["CodecSettings", "Encoded", "decode", "encode"]
