"""Slot variables: Adam's m and v, saved with their variable and their optimizer.

    mpirun -n 4 python -m mpi4py docs/examples/training_slots.py
"""

import numpy as np
from mpi4py import MPI
from training_model import Net, ToyIterator, say, train_step

import hpckpt

size = MPI.COMM_WORLD.size
mesh = hpckpt.create_mesh([("x", size)])
net, opt, iterator = Net(mesh), hpckpt.optimizers.Adam(0.1), ToyIterator()
for _ in range(3):
    train_step(net, next(iterator), opt)  # creates the slots m and v of kernel and bias

say("slot names:", opt.get_slot_names())
say("m of the bias:", opt.get_slot(net.l1.bias, "m").numpy())

path = hpckpt.Checkpoint(net=net, optimizer=opt).save("./slots/ckpt")
for key, shape in hpckpt.list_variables(path):
    say(f"  {key:45s} {shape}")

# A slot is saved only if its variable is saved too.
only_opt = hpckpt.Checkpoint(optimizer=opt).write("./slots/optimizer_only")
say("optimizer alone:", [k for k, _ in hpckpt.list_variables(only_opt)])

# Restore into a new model on another mesh and layout. The optimizer is created after
# restore(): attaching it restores `iterations` and, as TF's optimizers do, creates and
# fills the slots of the variables that exist.
dims = [("x", 2), ("y", size // 2)] if size % 2 == 0 else [("x", size), ("y", 1)]
mesh2 = hpckpt.create_mesh(dims)
net2 = Net(mesh2)
ckpt2 = hpckpt.Checkpoint(net=net2)
status = ckpt2.restore(path)
net2(np.zeros((1, 1), np.float32))  # builds kernel and bias: restored on creation
ckpt2.optimizer = opt2 = hpckpt.optimizers.Adam(0.1)  # restores `iterations` and the slots
m = opt2.get_slot(net2.l1.bias, "m")  # created by the restore, with the saved value
say("restored m:  ", m.numpy(), " iterations:", int(opt2.iterations.local))
status.assert_consumed()  # everything matched, before any training step

# The other order: the optimizer exists first, the variables come later. Each slot is
# created and filled when its variable is built.
net3, opt3 = Net(mesh2), hpckpt.optimizers.Adam(0.1)
hpckpt.Checkpoint(net=net3, optimizer=opt3).restore(path).expect_partial()
net3(np.zeros((1, 1), np.float32))  # builds kernel and bias: their slots appear
say("m after the build:", opt3.get_slot(net3.l1.bias, "m").numpy())

# Both copies now train identically, whatever their layouts.
example = next(iterator)
a = train_step(net, example, opt)
b = train_step(net2, example, opt2)
pairs = zip(net.trainable_variables, net2.trainable_variables, strict=True)
same = all(np.array_equal(x.numpy(), y.numpy()) for x, y in pairs)
say(f"next step: loss {a:.4f} vs {b:.4f}, parameters bit-identical: {same}")

# SGD with momentum has one slot, "momentum".
sgd = hpckpt.optimizers.SGD(0.01, momentum=0.9)
sgd.apply_gradients([(np.ones_like(net.l1.bias.local), net.l1.bias)])
say("SGD slots:", sgd.get_slot_names(), sgd.get_slot(net.l1.bias, "momentum").numpy())
