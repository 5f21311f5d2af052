"""Competitors: hpckpt, the raw IO limits, plain h5py, numpy files, torch DCP."""

from .base import Competitor
from .h5py_mpio import H5pyCompetitor, H5pyReader
from .hpckpt_io import HpckptCompetitor, HpckptRestoreVariant
from .numpy_files import NpySaveCompetitor, NpzCompetitor
from .raw import MpiioCompetitor, PosixCompetitor, RawPlan
from .registry import DESCRIPTIONS, RAW, build
from .torch_dcp import TorchDcpCompetitor, even_shards, torch_available

__all__ = [
    "DESCRIPTIONS",
    "RAW",
    "Competitor",
    "H5pyCompetitor",
    "H5pyReader",
    "HpckptCompetitor",
    "HpckptRestoreVariant",
    "MpiioCompetitor",
    "NpySaveCompetitor",
    "NpzCompetitor",
    "PosixCompetitor",
    "RawPlan",
    "TorchDcpCompetitor",
    "build",
    "even_shards",
    "torch_available",
]
