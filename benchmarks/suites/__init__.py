"""The suites: each module has ``add_parser(subparsers)`` and ``run(args) -> int``.

Modules import MPI, h5py and hpckpt only inside ``run`` so that ``--help`` and
``plot`` work without an MPI launcher.
"""

from . import async_save, bandwidth, plot, reshard, scale, scale_model, small, table

SUITES = {
    "bandwidth": bandwidth,
    "small": small,
    "reshard": reshard,
    "async": async_save,
    "scale-model": scale_model,
    "scale": scale,
    "plot": plot,
    "table": table,
}

__all__ = ["SUITES"]
