"""Loading mechanics: named edges, partial restore through fake objects, deferred restore.

Needs the checkpoints of training_loop.py in ./tf_ckpts.

    mpirun -n 4 python -m mpi4py docs/examples/training_loading.py
"""

import numpy as np
from training_model import say

import hpckpt

# The object graph stored in the latest checkpoint: nodes joined by named edges.
latest = hpckpt.latest_checkpoint("./tf_ckpts/")
graph = hpckpt.load_checkpoint(latest).index.graph
nodes = graph["nodes"]


def show(n, name, depth):
    node = nodes[n]
    label = f"  [{node['kind']}: {node['key']}]" if node["key"] else ""
    say("    " * depth + f"{name} -> node {n}{label}")
    for child_name, child in node["children"]:
        show(child, child_name, depth + 1)


say(f"object graph of {latest}:")
show(0, "(root)", 0)
for n, node in enumerate(nodes):
    for var, slot_name, slot in node["slots"]:
        say(f"slot edge: owner node {n} --{slot_name}--> node {slot} (for variable node {var})")

# Restore just the bias: rebuild one path root -> net -> l1 -> bias.
# The bias was saved sharded over 4 ranks; this one is replicated.
to_restore = hpckpt.Variable(np.zeros(5, np.float32))
say("before restore:", to_restore.numpy())  # All zeros
fake_layer = hpckpt.Checkpoint(bias=to_restore)
fake_net = hpckpt.Checkpoint(l1=fake_layer)
new_root = hpckpt.Checkpoint(net=fake_net)
status = new_root.restore(latest)
say("after restore: ", to_restore.numpy())  # This gets the restored value.

status.assert_existing_objects_matched()  # every object we built has a value
try:
    status.assert_consumed()  # the kernel, optimizer, step, iterator were not used
except AssertionError as e:
    say("assert_consumed failed as expected:", e)

# Deferred restoration: the kernel is restored when it is attached.
deferred_restore = hpckpt.Variable(np.zeros((1, 5), np.float32))
say("before attaching:", deferred_restore.numpy())  # Not restored; still zeros
fake_layer.kernel = deferred_restore  # collective: every rank attaches it
say("after attaching: ", deferred_restore.numpy())  # Restored

status.expect_partial()  # no warning about the values we did not restore
