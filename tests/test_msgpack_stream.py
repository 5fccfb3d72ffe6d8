"""msgpack_stream reads back every dtype that flax writes, leaf by leaf."""

import io

import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization

from xfactor_core import msgpack_stream


@pytest.mark.parametrize("dtype", [jnp.bfloat16, np.float16, np.float32,
                                   np.int8, np.uint32, np.bool_])
def test_a_tree_round_trips_in_every_dtype_flax_writes(dtype):
  values = np.arange(-6, 6, dtype=np.float32).reshape(3, 4) / 4
  tree = {"params": {"w": np.asarray(values).astype(dtype),
                     "scalar": np.asarray(values[0, 1]).astype(dtype)[()]},
          "step": 7, "skipped": {"m": np.zeros(5, np.float32)}}
  written = io.BytesIO()
  msgpack_stream.write_tree(written, tree)
  flax_read = serialization.msgpack_restore(written.getvalue())
  np.testing.assert_array_equal(flax_read["params"]["w"], tree["params"]["w"])
  read = msgpack_stream.read_entries(io.BytesIO(written.getvalue()),
                                     {"params", "step"})
  assert set(read) == {"params", "step"} and read["step"] == 7
  w = read["params"]["w"]
  assert w.dtype == np.dtype(dtype) and w.shape == (3, 4)
  np.testing.assert_array_equal(w, tree["params"]["w"])
  assert read["params"]["scalar"].dtype == np.dtype(dtype)
  assert read["params"]["scalar"] == tree["params"]["scalar"]


def test_a_bf16_tree_reads_back_as_flax_reads_it():
  tree = {"params": {"k": jnp.linspace(-1, 1, 10, dtype=jnp.bfloat16)}}
  written = io.BytesIO()
  msgpack_stream.write_tree(written, tree)
  ours = msgpack_stream.read_entries(io.BytesIO(written.getvalue()),
                                     {"params"})["params"]["k"]
  theirs = serialization.msgpack_restore(written.getvalue())["params"]["k"]
  assert ours.dtype == theirs.dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(ours, np.float32),
                                np.asarray(theirs, np.float32))


def test_ext_objects_go_through_flax_s_own_decoder(monkeypatch):
  """The library's decoder, not a copy: what flax learns to read, we read."""
  calls = []
  original = serialization._msgpack_ext_unpack  # pylint: disable=protected-access

  def counting(code, data):
    calls.append(code)
    return original(code, data)

  monkeypatch.setattr(serialization, "_msgpack_ext_unpack", counting)
  written = io.BytesIO()
  msgpack_stream.write_tree(written, {"a": np.ones(3, jnp.bfloat16),
                                      "b": np.float32(2.0)})
  read = msgpack_stream.read_entries(io.BytesIO(written.getvalue()), {"a", "b"})
  assert calls == [1, 3] and read["a"].dtype == jnp.bfloat16
