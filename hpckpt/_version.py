"""The version of hpckpt (one place: setup.cfg, the package and every index read it)."""

__version__ = "0.1.0"
