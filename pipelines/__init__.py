"""Prefect orchestration of the DVC pipeline (docs/orchestration.md).

``pipelines.graph`` reads the stage order from ``dvc.yaml``; ``pipelines.flow`` runs it, one Prefect task per
stage; ``pipelines.artifacts`` turns the metrics files into Prefect artifacts; ``pipelines.deploy`` serves the
flow on a cron schedule. Prefect calls DVC, DVC calls the ``faceswap`` CLI: nothing here names a stage.
"""
