"""Records kept in files: the JSON report (``report``), baselines (``baseline``), CI shards
joined (``merge``), the result cache (``cache``), and lm-eval's output files read as a baseline
and written from a report (``lm_eval_format``, ``lm_eval_read``, ``lm_eval_write``)."""
