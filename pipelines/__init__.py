"""pipelines: the ``regkit`` CLI, configs, end-to-end pipelines, evaluation and reports."""
