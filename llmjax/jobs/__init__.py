"""Jobs: `config.job` -> what runs. `registry` holds the table, `catalog` fills it."""

from llmjax.jobs import catalog
from llmjax.jobs.registry import JOBS, check_overrides, run

__all__ = ["JOBS", "catalog", "check_overrides", "run"]
