"""The Great Expectations gate between ``align`` and training (the library of stage ``validate``).

- :mod:`.checks`: measurements on the crops and clips (no GX);
- :mod:`.suite`: the expectations, built from ``params.yaml`` (read and extend it there);
- :mod:`.gate`: :func:`~faceswap.validation.gate.check_faces` runs them in an in-memory GX context and returns
  the verdict, the accepted and the quarantined rows; :func:`~faceswap.validation.gate.build_data_docs` writes
  the run's Data Docs into a given folder. GX is imported only when the gate runs.

The stage (which paths, which files, the record) is :mod:`faceswap.stages.validate`.
"""
