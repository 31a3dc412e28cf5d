"""MLflow tracking of a sweep, one concept per module:

- `store`: which MLflow store a sweep logs to, whether it answers, how to open its UI;
- `layout`: the runs and tags of a sweep in MLflow, and how to find them (analysis reads it);
- `sweep_run`: the sweep's parent run, opened with the study's settings and closed with its files;
- `callback`: the Tune callback that maps trials to nested runs and logs every epoch and status;
- `outage`: writes queued in order while the server is down, replayed when it answers;
- `artifacts` and `figures`: what a trial's run holds when it ends (curves, previews, tables);
- `model_export`: a trial's tested weights as an MLflow PyTorch model.

Every MLflow call is made by the driver. Why one process: MLflow 3's default store is a SQLite
file, and several processes writing one SQLite file fail with "database is locked"; a single
writer cannot lock itself out. It also means trials on other nodes of a cluster need no route to
the tracking server, and a trial the scheduler killed still gets its figures, drawn from its last
checkpoint. This file imports nothing, so `tracking.store` and `tracking.layout` stay light for
the sweep CLI and analysis.
"""
