"""The 3×3-bottleneck face-swap autoencoder and its decoder up-sampling variants."""

from faceswap.model.autoencoder import (
    Decoder,
    Encoder,
    FaceSwapAutoencoder,
    Geometry,
    ModelConfig,
    derive_geometry,
)
from faceswap.model.blocks import UPSAMPLERS, check_variant, create_upsample, icnr_, upsampler

__all__ = [
    "UPSAMPLERS",
    "Decoder",
    "Encoder",
    "FaceSwapAutoencoder",
    "Geometry",
    "ModelConfig",
    "check_variant",
    "create_upsample",
    "derive_geometry",
    "icnr_",
    "upsampler",
]
