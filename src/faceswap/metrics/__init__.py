"""Image-quality metrics: LPIPS with real offline weights, and the checkerboard-artifact score."""
