"""The dataset stages of a batch, one module per stage: ``ingest`` (with ``landing``, which finds drops), ``clean``,
``pii``, ``dedup`` and ``labeling`` are plain functions over frames, tested on frames; ``batch`` says where a
batch's data lives on its lakeFS branch; ``runners`` moves each stage's data between the branch and those
functions. The order of the stages and the gates that judge them are in :mod:`dagster_project.plan`."""
