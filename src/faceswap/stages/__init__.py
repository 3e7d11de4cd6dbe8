"""One module per DVC stage: ``dvc.yaml`` stage ``X`` runs ``faceswap X``, whose code is ``faceswap.stages.X``.

Every stage module has the same shape, so a newcomer finds any stage in one hop and reads it the same way:

- ``run(params, ...) -> Record``: the stage as a plain function. It takes every path from ``params.paths`` (the
  only place paths are stated; dvc.yaml reads the same keys), calls the libraries below it with explicit paths,
  and writes the stage's records (its report, its DVC metrics file). Libraries under ``faceswap.data``,
  ``faceswap.validation``, ``faceswap.evaluation`` … never choose a path and never write a stage's record;
  they write the bulk files they produce (frames, crops, checkpoints, pictures) into the folder they are given.
- ``Record``: a frozen dataclass with ``to_json()`` (and ``from_json()`` where the next stage reads it), the
  typed contract between stages instead of a dict read by key.
- ``format_record(record) -> str``: the lines the CLI prints.

``faceswap.cli`` stays thin: it loads params, turns its options into dotted params overrides (one way), calls
``run`` and prints.
"""
