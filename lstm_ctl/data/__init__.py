"""The user's data, up to tf.data: readers (files, DataFrames; no
TensorFlow), tasks (series, lanes, baselines), pipelines, losses.

A pandas DataFrame stands in for a CSV file: `frame_task(df, config)` and
`frame_series(df, config)` give what `build_task` and `eval_series` give for
the same table in a file; `write_frame(df, path)` writes it as a file that
reads back as the same table (to train on it: config.json names a file).
"""

from lstm_ctl.data.csv_files import write_frame  # noqa: F401
from lstm_ctl.data.tasks import frame_series, frame_task  # noqa: F401
