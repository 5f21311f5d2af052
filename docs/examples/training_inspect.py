"""Manually inspecting a checkpoint with load_checkpoint (no MPI launcher needed).

Needs the checkpoints of training_loop.py in ./tf_ckpts.

    python docs/examples/training_inspect.py
"""

import hpckpt

reader = hpckpt.load_checkpoint("./tf_ckpts/")  # a directory: its latest checkpoint
print("checkpoint:", reader.prefix)
shape_from_key = reader.get_variable_to_shape_map()
dtype_from_key = reader.get_variable_to_dtype_map()
for key in sorted(shape_from_key.keys()):
    print(f"  {key:55s} {dtype_from_key[key].name:8s} {shape_from_key[key]}")

key = "net/l1/kernel/.ATTRIBUTES/VARIABLE_VALUE"
print("Shape:", shape_from_key[key])
print("Dtype:", dtype_from_key[key].name)
print(reader.get_tensor(key))  # the global array, checksums verified
missing = "net/l2/bias/.ATTRIBUTES/VARIABLE_VALUE"
print("has_tensor:", reader.has_tensor(key), reader.has_tensor(missing))

# The layout each tensor had when it was saved (restoring may use another).
print("layout at save:", reader.tensor_info(key).sharding_specs, reader.tensor_info(key).mesh_shape)

# Python state is stored as a uint8 tensor holding the string.
print("iterator state:", reader.get_tensor("iterator/.ATTRIBUTES/py_state").tobytes().decode())

# list_variables: [(key, shape)] sorted by key, for a directory or a checkpoint path.
print(hpckpt.list_variables("./tf_ckpts/ckpt-9")[:3])
