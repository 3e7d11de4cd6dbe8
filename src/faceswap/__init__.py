"""faceswap: a face-swap training pipeline around the seed's 3×3-bottleneck autoencoder."""

__version__ = "0.1.0"
