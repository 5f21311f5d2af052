#!/usr/bin/env bash
# Idempotent set-up for hpckpt: system MPI + parallel HDF5, a .venv with numpy,
# mpi4py and h5py built from source against parallel HDF5, and hpckpt itself.
#
# On a Debian machine as root it installs the missing apt packages. Elsewhere (a
# cluster after `module load openmpi hdf5/parallel`) it uses the mpicc and parallel
# HDF5 found on PATH / pkg-config / HDF5_DIR and says what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
H5PY_VERSION=${H5PY_VERSION:-3.16.0}
APT_PACKAGES="openmpi-bin libopenmpi-dev libhdf5-openmpi-dev hdf5-tools pkg-config"

say() { echo "[setup] $*"; }
die() { echo "[setup] ERROR: $*" >&2; exit 1; }

# 1. System packages.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    missing=""
    for p in $APT_PACKAGES; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        say "installing apt packages:$missing"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        # shellcheck disable=SC2086
        apt-get install -y -q --no-install-recommends $missing
    fi
fi
problems=""
command -v mpicc >/dev/null 2>&1 || problems="$problems mpicc (Open MPI compiler wrapper)"
command -v mpirun >/dev/null 2>&1 || problems="$problems mpirun"
if [ -z "${HDF5_DIR:-}" ]; then
    if pkg-config --exists hdf5-openmpi 2>/dev/null; then
        export HDF5_PKGCONFIG_NAME=hdf5-openmpi
    elif command -v h5pcc >/dev/null 2>&1; then
        HDF5_DIR=$(dirname "$(dirname "$(command -v h5pcc)")"); export HDF5_DIR
    else
        problems="$problems parallel-HDF5 (pkg-config hdf5-openmpi, h5pcc or HDF5_DIR)"
    fi
fi
[ -z "$problems" ] || die "missing:$problems. As root on Debian this script installs them; on a cluster run e.g. 'module load openmpi hdf5-parallel' first."

# 2. The virtual environment.
if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP="$PY -m pip --disable-pip-version-check -q"
$PY - <<'PY' 2>/dev/null || { say "installing build tools, numpy, mpi4py"; $PIP install -U pip 'setuptools>=61' wheel 'Cython>=3' 'numpy>=1.24' pkgconfig 'mpi4py>=3.1'; }
import Cython, numpy, pkgconfig, mpi4py, setuptools  # noqa: F401
PY

# 3. h5py against parallel HDF5.
if ! $PY -c "import h5py, sys; sys.exit(0 if h5py.get_config().mpi else 1)" 2>/dev/null; then
    say "building h5py $H5PY_VERSION against parallel HDF5 (about 3 minutes the first time; cached afterwards)"
    $PIP uninstall -y h5py >/dev/null 2>&1 || true
    CC=mpicc HDF5_MPI=ON $PIP install --no-binary=h5py --no-build-isolation "h5py==$H5PY_VERSION"
fi
$PY -c "import h5py, sys; sys.exit(0 if h5py.get_config().mpi else 1)" \
    || die "h5py.get_config().mpi is False: h5py was not built against parallel HDF5"

# 4. hpckpt itself, editable, with the test extras (they include ml_dtypes and the CPU
#    build of torch==2.13.0 that this machine's pip index serves: the tests of
#    hpckpt.torch run in `make test`).
$PY - <<'PY' 2>/dev/null || { say "installing hpckpt (editable) with test extras (ml_dtypes, torch==2.13.0)"; $PIP install --no-build-isolation -e '.[test]'; }
import importlib.metadata as m, pathlib, platform, hpckpt, pytest, pytest_mpi, pytest_timeout, hypothesis, importlinter, mypy, ml_dtypes, torch  # noqa: F401
m.version("hpckpt")
if platform.machine() == "x86_64":  # the C extension (AVX-512 CRC-32C) is built from the current source
    import hpckpt.io._crc32c as ext
    src = pathlib.Path(hpckpt.__file__).parent / "io" / "_crc32c.c"
    assert pathlib.Path(ext.__file__).stat().st_mtime >= src.stat().st_mtime
PY
say "ready: $($PY -c 'import h5py, mpi4py, numpy; from hpckpt.io.checksum import ACCELERATED; crc = "AVX-512" if ACCELERATED else "the crc32c package"; print(f"h5py {h5py.__version__} (HDF5 {h5py.version.hdf5_version}, mpi={h5py.get_config().mpi}), mpi4py {mpi4py.__version__}, numpy {numpy.__version__}, CRC-32C by {crc}")')"
