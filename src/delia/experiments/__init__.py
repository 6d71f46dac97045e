"""Experiments: YAML grids of methods x data sizes x ratios x seeds, run as hashed, cached stage steps;
results.csv/json and `delia report` (the paper's tables and figures) from saved results."""

from delia.experiments.config import CostModel, DataConfig, ExperimentConfig, GridConfig
from delia.experiments.plan import Ctx, Plan, Run, Step, expand

__all__ = ["CostModel", "Ctx", "DataConfig", "ExperimentConfig", "GridConfig", "Plan", "Run", "Step", "expand"]
