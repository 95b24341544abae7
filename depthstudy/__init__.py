"""depthstudy: the plain-vs-residual depth study of He et al. 2015, as a command-line tool and a Python API.

    import depthstudy
    depthstudy.train_run(["model.depth=8"]); depthstudy.load_runs("runs/default"); depthstudy.write_report("runs/default")

(depthstudy.api has the details; importing depthstudy loads neither torch nor pandas until they are used.)
"""

__version__ = "0.1.0"
# (not train/report: those names are the submodules depthstudy.train and depthstudy.report)
__all__ = ["train_run", "load_runs", "load_curves", "write_report"]


def __dir__() -> list[str]:
    """The lazy exports too, so that a notebook's completion offers them."""
    return sorted(set(globals()) | set(__all__))


def __getattr__(name: str):
    if name in __all__:
        from depthstudy import api

        return getattr(api, name)
    raise AttributeError(f"module 'depthstudy' has no attribute {name!r}")
