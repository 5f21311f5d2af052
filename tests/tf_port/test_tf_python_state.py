"""Port of TensorFlow's ``tensorflow/python/trackable/python_state_test.py``.

Source: tensorflow/tensorflow, that file at commit 1b37ad06263b2beee195ea05496918b2027d4b6c.
Every test keeps TF's name (snake_case) and class, and names the TF test it ports.
TF tests that are not here are listed, with the reason, in SKIPPED.md.

Translation: ``module.Module`` -> ``hpckpt.Module``, ``python_state.PythonState`` ->
``hpckpt.PythonState``. The helper classes ``_NumpyState``/``_NumpyWrapper`` are TF's test
code, translated as they are: ``_NumpyWrapper.serialize`` returns the ``bytes`` of
``numpy.save``, as in TF.
"""

# TF's own idioms are kept as they are (the port is line by line):
# ruff: noqa: UP008

from __future__ import annotations

import io
import os

import numpy
import pytest
from _tfport import Agreed

import hpckpt

pytestmark = [pytest.mark.mpi(min_size=1), pytest.mark.timeout(120)]


class _NumpyState(hpckpt.Module):
    """A checkpointable object whose NumPy array attributes are saved/restored.

    Attributes of ``_NumpyState`` objects are created automatically by ``restore()``
    (restore-on-create of ``_NumpyWrapper`` PythonState objects).
    """

    def __init__(self):
        super(_NumpyState, self).__setattr__("_arrays", hpckpt.Module())

    def __getattribute__(self, name):
        """Un-wrap `_NumpyWrapper` objects when accessing attributes."""
        try:
            arrays = super(_NumpyState, self).__getattribute__("_arrays")
        except AttributeError:
            # _arrays hasn't been assigned yet
            return super(_NumpyState, self).__getattribute__(name)
        try:
            value = getattr(arrays, name)
        except AttributeError:
            dummy_array = numpy.array([])
            setattr(arrays, name, _NumpyWrapper(dummy_array))
            value = getattr(arrays, name)
            if value.array is dummy_array:
                # No set or restored attribute with this name
                delattr(arrays, name)
                return super(_NumpyState, self).__getattribute__(name)

        if isinstance(value, _NumpyWrapper):
            return value.array
        return super(_NumpyState, self).__getattribute__(name)

    def __setattr__(self, name, value):
        """Automatically wrap NumPy arrays assigned to attributes."""
        if isinstance(value, (numpy.ndarray, numpy.generic)):
            try:
                existing = getattr(self._arrays, name)
                existing.array = value
                return
            except AttributeError:
                value = _NumpyWrapper(value)
            setattr(self._arrays, name, value)
            return
        super(_NumpyState, self).__setattr__(name, value)


class _NumpyWrapper(hpckpt.PythonState):
    """Wraps a NumPy array for storage in an object-based checkpoint."""

    def __init__(self, array):
        self.array = array

    def serialize(self):
        """Callback to serialize the array."""
        string_file = io.BytesIO()
        try:
            numpy.save(string_file, self.array, allow_pickle=False)
            serialized = string_file.getvalue()
        finally:
            string_file.close()
        return serialized

    def deserialize(self, string_value):
        """Callback to deserialize the array."""
        string_file = io.BytesIO(string_value)
        try:
            self.array = numpy.load(string_file, allow_pickle=False)
        finally:
            string_file.close()


class TestNumpyStateTests:
    # ports NumpyStateTests.testWrapper
    def test_wrapper(self, shared_dir):
        prefix = os.path.join(shared_dir, "ckpt")
        root = hpckpt.Checkpoint(numpy=_NumpyWrapper(numpy.array([1.0])))
        save_path = root.save(prefix)
        root.numpy.array *= 2.0
        assert [2.0] == root.numpy.array
        root.restore(save_path)
        with Agreed():
            assert [1.0] == root.numpy.array

    # ports NumpyStateTests.testSaveRestoreNumpyState
    def test_save_restore_numpy_state(self, shared_dir):
        prefix = os.path.join(shared_dir, "ckpt")
        save_state = _NumpyState()
        saver = hpckpt.Checkpoint(numpy=save_state)
        save_state.a = numpy.ones([2, 2])
        save_state.b = numpy.ones([2, 2])
        save_state.b = numpy.zeros([2, 2])
        save_state.c = numpy.int64(3)
        numpy.testing.assert_array_equal(numpy.ones([2, 2]), save_state.a)
        numpy.testing.assert_array_equal(numpy.zeros([2, 2]), save_state.b)
        assert 3 == save_state.c
        first_save_path = saver.save(prefix)
        save_state.a[1, 1] = 2.0
        save_state.c = numpy.int64(4)
        second_save_path = saver.save(prefix)

        load_state = _NumpyState()
        loader = hpckpt.Checkpoint(numpy=load_state)
        loader.restore(first_save_path).initialize_or_restore()
        with Agreed():
            numpy.testing.assert_array_equal(numpy.ones([2, 2]), load_state.a)
            numpy.testing.assert_array_equal(numpy.zeros([2, 2]), load_state.b)
            assert 3 == load_state.c
            load_state.a[0, 0] = 42.0
            numpy.testing.assert_array_equal([[42.0, 1.0], [1.0, 1.0]], load_state.a)
        loader.restore(first_save_path).run_restore_ops()
        with Agreed():
            numpy.testing.assert_array_equal(numpy.ones([2, 2]), load_state.a)
        loader.restore(second_save_path).run_restore_ops()
        with Agreed():
            numpy.testing.assert_array_equal([[1.0, 1.0], [1.0, 2.0]], load_state.a)
            numpy.testing.assert_array_equal(numpy.zeros([2, 2]), load_state.b)
            assert 4 == load_state.c

    # ports NumpyStateTests.testDocstringExample
    def test_docstring_example(self, shared_dir):
        arrays = _NumpyState()
        checkpoint = hpckpt.Checkpoint(numpy_arrays=arrays)
        arrays.x = numpy.zeros([3, 4])
        save_path = checkpoint.save(os.path.join(shared_dir, "ckpt"))
        arrays.x[1, 1] = 4.0
        checkpoint.restore(save_path)
        with Agreed():
            numpy.testing.assert_array_equal(numpy.zeros([3, 4]), arrays.x)

        second_checkpoint = hpckpt.Checkpoint(numpy_arrays=_NumpyState())
        second_checkpoint.restore(save_path)
        with Agreed():
            numpy.testing.assert_array_equal(numpy.zeros([3, 4]), second_checkpoint.numpy_arrays.x)


class TestPythonStateSavebleTests:
    # ports PythonStateSavebleTests.testAssertConsumedFailsWithUsedPythonState
    def test_assert_consumed_fails_with_used_python_state(self, shared_dir):
        # TF attaches a PythonStringStateSaveable "foo_attr" to a bare Trackable through
        # _gather_saveables_for_checkpoint; hpckpt's counterpart is a PythonState
        # dependency named foo_attr (state "" on save, ignored on restore).
        class _Config(hpckpt.PythonState):
            def serialize(self):
                return ""

            def deserialize(self, string_value):
                return None

        has_config = hpckpt.Module()
        has_config.foo_attr = _Config()
        saved = hpckpt.Checkpoint(obj=has_config)
        save_path = saved.save(os.path.join(shared_dir, "ckpt"))
        restored = hpckpt.Checkpoint(obj=hpckpt.Module())
        status = restored.restore(save_path)
        with pytest.raises(AssertionError, match="foo_attr"):
            status.assert_consumed()
