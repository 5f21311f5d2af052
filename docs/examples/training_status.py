"""The status returned by restore()/read() and its assertions.

    mpirun -n 4 python -m mpi4py docs/examples/training_status.py
"""

import gc
import warnings

import numpy as np
from training_model import say

import hpckpt


def check(label, status):
    """Run the three assertions and report which pass."""
    results = []
    for name in ("assert_consumed", "assert_existing_objects_matched", "assert_nontrivial_match"):
        try:
            getattr(status, name)()
            results.append(f"{name}: ok")
        except AssertionError:
            results.append(f"{name}: FAILS")
    say(f"{label:32s}", ", ".join(results))


def model(seed):
    m = hpckpt.Module()
    m.w = hpckpt.Variable(np.full((4, 3), float(seed)))
    m.b = hpckpt.Variable(np.zeros(3))
    return m


path = hpckpt.Checkpoint(model=model(1)).save("./status/ckpt")

# Exact match: every saved value used, every live object given a value.
check("exact match", hpckpt.Checkpoint(model=model(0)).restore(path))

# A live object the checkpoint does not have.
extra = model(0)
extra.scale = hpckpt.Variable(1.0)
status = hpckpt.Checkpoint(model=extra).restore(path)
check("extra live variable", status)
try:
    status.assert_existing_objects_matched()
except AssertionError as e:
    say("   ", e)

# A saved value with no live object (partial restore).
partial = model(0)
del partial.b
status = hpckpt.Checkpoint(model=partial).restore(path).expect_partial()
check("saved value not used", status)

# Only save_counter matched: as in TF, that is a match besides the root.
status = hpckpt.Checkpoint(other=hpckpt.Variable(0.0)).restore(path).expect_partial()
check("only save_counter matched", status)

# Nothing but the root matched (read() does not expect save_counter).
status = hpckpt.Checkpoint(other=hpckpt.Variable(0.0)).read(path).expect_partial()
check("nothing matched (read)", status)

# restore(None): nothing restored, every assertion fails; the no-ops exist for TF code.
status = hpckpt.Checkpoint(model=model(0)).restore(None)
check("restore(None)", status)
status.initialize_or_restore()
status.run_restore_ops()

# Unused values produce one warning (on rank 0) when the status, and every object
# still waiting for a deferred value, are garbage-collected...
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    m = model(0)
    del m.b  # the saved "b" waits (deferred) in m
    status = hpckpt.Checkpoint(model=m).restore(path)
    del status, m
    gc.collect()
for w in caught:
    say("warning:", w.message)
# ...unless expect_partial() was called.
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    m = model(0)
    del m.b
    status = hpckpt.Checkpoint(model=m).restore(path).expect_partial()
    del status, m
    gc.collect()
say("warnings with expect_partial():", len(caught))
