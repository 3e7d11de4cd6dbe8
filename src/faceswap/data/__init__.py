"""Data stages' libraries: video decoding, face detection and alignment, the face manifest and the training set."""
