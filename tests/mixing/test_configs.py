from pathlib import Path

from delia.config import load_config
from delia.mixing import BuildConfig

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_build_configs_validate():
    paths = sorted((ROOT / "configs").glob("build_*.yaml"))
    assert paths
    for p in paths:
        cfg = load_config(BuildConfig, p)
        assert cfg.template == "\n{context}\n\n\n{instruction}" and cfg.ratio == 520.0
