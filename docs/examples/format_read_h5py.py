"""Read an hpckpt checkpoint with plain h5py and json: no hpckpt, no MPI.

    python docs/examples/format_read_h5py.py fmt/ckpt-3
"""

import json
import os
import sys

import h5py

prefix = sys.argv[1]
with open(prefix + ".index.json") as f:
    index = json.load(f)
data = os.path.join(os.path.dirname(prefix), index["data_file"]["name"])
with h5py.File(data, "r") as h5:
    print("format version attribute:", h5.attrs["hpckpt_format_version"])
    for key, entry in sorted(index["tensors"].items()):
        ds = h5[entry["dataset"]]
        print(f"{key}\n    dataset {entry['dataset']!r} {ds.dtype} {ds.shape}")
        print("   ", str(ds[()]).replace("\n", "\n    "))
    cursor = h5[index["tensors"]["data/.ATTRIBUTES/py_state"]["dataset"]][()]
    print("python state as text:", cursor.tobytes().decode())
