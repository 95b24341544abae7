"""Hydra's basic sweeper, plus a list of jobs to launch instead of the whole grid.

`depthstudy sweep` expands and checks the grid itself (depthstudy.sweep.plan), then launches only the runs that
are not finished: on a cluster a finished run would otherwise wait in the queue only to say so. It writes those
jobs' overrides to a JSON file named in `hydra.sweeper.jobs_file`; without one this is the basic sweeper. It has to
live in the hydra_plugins package: Hydra instantiates sweepers only from there.
"""

# (no `from __future__ import annotations`: Hydra runs this module before it is in sys.modules, and dataclasses
# would then fail to resolve string annotations)
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf


@dataclass
class DepthstudySweeperConf:
    _target_: str = "hydra_plugins.depthstudy_sweeper.depthstudy_sweeper.DepthstudySweeper"
    max_batch_size: Optional[int] = None
    params: Optional[Dict[str, str]] = None
    jobs_file: Optional[str] = None  # a JSON list of jobs, each a list of overrides: launch exactly these


ConfigStore.instance().store(group="hydra/sweeper", name="depthstudy", node=DepthstudySweeperConf,
                             provider="depthstudy")


class DepthstudySweeper(BasicSweeper):
    def __init__(self, max_batch_size: Optional[int], params: Optional[Dict[str, str]] = None,
                 jobs_file: Optional[str] = None) -> None:
        super().__init__(max_batch_size, params)
        self.jobs_file = jobs_file

    def sweep(self, arguments: List[str]) -> Any:
        if not self.jobs_file:
            return super().sweep(arguments)
        jobs = json.loads(Path(self.jobs_file).read_text())
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        # No validate_batch_is_legal: depthstudy's plan composed and checked every job already.
        returns, start = [], 0
        for batch in self.split_overrides_to_chunks(jobs, self.max_batch_size):
            results = self.launcher.launch(batch, initial_job_idx=start)
            for r in results:
                _ = r.return_value  # a job that raised raises here, as in the basic sweeper
            start += len(batch)
            returns.append(results)
        return returns
