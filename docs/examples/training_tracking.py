"""Object tracking: lists, dicts, tuples and namedtuples; what is rejected or ignored.

    mpirun -n 4 python -m mpi4py docs/examples/training_tracking.py
"""

import collections
from typing import NamedTuple

import numpy as np
from training_model import say

import hpckpt

# Lists and dicts assigned to attributes are tracked, and so are later changes.
save = hpckpt.Checkpoint()
save.listed = [hpckpt.Variable(1.0)]
save.listed.append(hpckpt.Variable(2.0))
save.mapped = {"one": save.listed[0]}
save.mapped["two"] = save.listed[1]
save_path = save.save("./tf_list_example")
say("saved", save_path)
for key, _ in hpckpt.list_variables(save_path):
    say(f"  {key}")

restore = hpckpt.Checkpoint()
v2 = hpckpt.Variable(0.0)
assert 0.0 == v2.numpy()  # Not restored yet
restore.mapped = {"two": v2}
restore.restore(save_path)
assert 2.0 == v2.numpy()

# The wrappers restore a value as soon as a matching item is added.
restore.listed = []
say(restore.listed)  # TrackedList([])
v1 = hpckpt.Variable(0.0)
restore.listed.append(v1)  # Restores v1, from restore() above
assert 1.0 == v1.numpy()
say("v1 =", v1.numpy(), " v2 =", v2.numpy())

# As TF's ListWrapper, a tracked list wraps the caller's own list: changes show in both.
items = []
holder = hpckpt.Checkpoint(items=items)
holder.items.append(hpckpt.Variable(1.0))
holder.items.append(hpckpt.Variable(2.0))
say("the caller's list:", len(items), "items")
# Items are named by index: a change that renames them (del, insert, sort, pop, ...)
# makes the list refuse to be saved, rather than save values under other names.
del holder.items[0]
try:
    holder.save("./tracking_del")
except ValueError as e:
    msg = str(e)
    say("ValueError: Unable to save ...", msg[msg.index("a list element") : msg.index(" or moved")])

# Tuples and namedtuples (collections.namedtuple and typing.NamedTuple) are tracked:
# edges are named by index, and a namedtuple's also by field name (values are keyed by
# the first: the field).
Pair = collections.namedtuple("Pair", ["first", "second"])


class Point(NamedTuple):
    x: hpckpt.Variable
    y: hpckpt.Variable


m = hpckpt.Module()
m.pair = Pair(hpckpt.Variable(1.0), hpckpt.Variable(2.0))
m.point = Point(hpckpt.Variable(3.0), hpckpt.Variable(4.0))
m.tup = (hpckpt.Variable(5.0), [hpckpt.Variable(6.0)])  # the inner list is wrapped too
m.same = m.pair.first  # one object reachable twice is saved once (first path)

# Other Python values are ignored: numbers, strings, arrays, callables, None.
m.learning_rate = 0.1
m.name = "model"
m.scratch = np.zeros(3)
m.fn = print
path = hpckpt.Checkpoint(m=m).write("./tracking")
for key, _ in hpckpt.list_variables(path):
    say(f"  {key}")

# Sets and other containers cannot be tracked: ValueError.
for bad in ({hpckpt.Variable(1.0)}, frozenset(), collections.deque()):
    try:
        m.bad = bad
    except ValueError as e:
        say("ValueError:", e)
# A dict holding a trackable needs string keys.
try:
    m.by_int = {1: hpckpt.Variable(1.0)}
except ValueError as e:
    say("ValueError:", e)
# A Checkpoint keyword argument must be trackable.
try:
    hpckpt.Checkpoint(lr=0.1)
except ValueError as e:
    say("ValueError:", e)
