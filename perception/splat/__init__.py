"""The splat pipeline: video -> frames -> pycolmap SfM -> Gaussian splat training -> 3DGS .ply.

`run_splat` and `SplatConfig` are the interface; torch and pycolmap (the `splat` extra)
are imported only when a stage needs them, so importing this package works without them.
"""

from perception.splat.config import SplatConfig
from perception.splat.pipeline import missing_dependencies, run_splat

__all__ = ["SplatConfig", "missing_dependencies", "run_splat"]
