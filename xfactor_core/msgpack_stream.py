"""Flax msgpack state files, read and written as streams.

``flax.serialization.msgpack_restore`` needs the whole file in memory as one
``bytes`` before it decodes a single array, and ``msgpack_serialize`` builds
the whole file as one ``bytes`` before it is written: a published train state
(params, Adam moments, LPIPS weights: several GB) would need twice its size in
memory. These functions walk the same encoding one object at a time:

* :func:`read_entries` decodes the entries of the top-level map that are
  asked for and skips the others without keeping their bytes (so the params
  of a published train state come out of a zip member with only the params in
  memory);
* :func:`write_tree` writes a tree leaf by leaf, byte for byte what
  ``msgpack_serialize`` writes for trees without leaves over flax's 1 GiB
  chunk size.

The encoding is msgpack with flax's extension types: an array is ext type 1
holding ``msgpack((shape, dtype name, C-order bytes))``, a numpy scalar ext 3
(the same, shape ``()``), a Python complex ext 2. Ext objects are decoded by
flax's own decoder (``flax.serialization._msgpack_ext_unpack``), so any dtype
that flax writes, ``bfloat16`` included, reads back.
"""

from __future__ import annotations

import struct
from typing import Any, BinaryIO, Callable, Collection, Mapping

import msgpack
import numpy as np
from flax import serialization

_EXT_NDARRAY, _EXT_COMPLEX, _EXT_NPSCALAR = 1, 2, 3
_SKIP_BLOCK = 1 << 20


class StreamFormatError(ValueError):
  """The stream is not flax msgpack, or ends early (truncated)."""


class _Reader:
  """Exact reads and skips over a binary stream."""

  def __init__(self, stream: BinaryIO):
    self._stream = stream
    self.offset = 0

  def read(self, n: int) -> bytes:
    data = self._stream.read(n)
    while len(data) < n:  # streams may return short reads
      more = self._stream.read(n - len(data))
      if not more:
        raise StreamFormatError(
            f"the data ends at byte {self.offset + len(data)}, inside an "
            f"object that needs {n - len(data)} more bytes (truncated file)")
      data += more
    self.offset += n
    return data

  def skip(self, n: int) -> None:
    while n > 0:
      step = min(n, _SKIP_BLOCK)
      self.read(step)
      n -= step

  def uint(self, size: int) -> int:
    return int.from_bytes(self.read(size), "big")


def _decode_ext(code: int, data: bytes) -> Any:
  """One ext object, decoded by flax's own decoder, so that every dtype flax
  writes (``bfloat16`` included) reads back as flax reads it."""
  # pylint: disable-next=protected-access
  return serialization._msgpack_ext_unpack(code, data)


# Fixed-size scalars by first byte: nil, false, true, floats, ints.
_FIXED = {0xc0: 0, 0xc2: 0, 0xc3: 0, 0xca: 4, 0xcb: 8, 0xcc: 1, 0xcd: 2,
          0xce: 4, 0xcf: 8, 0xd0: 1, 0xd1: 2, 0xd2: 4, 0xd3: 8}
# Length-prefixed raw payloads (str, bin): first byte -> size of the length.
_SIZED = {0xc4: 1, 0xc5: 2, 0xc6: 4, 0xd9: 1, 0xda: 2, 0xdb: 4}
_FIXEXT = {0xd4: 1, 0xd5: 2, 0xd6: 4, 0xd7: 8, 0xd8: 16}
_EXT = {0xc7: 1, 0xc8: 2, 0xc9: 4}


def _value(reader: _Reader, keep: bool) -> Any:
  """The next object (decoded when ``keep``, else skipped and ``None``)."""
  head = reader.read(1)
  b = head[0]
  if b <= 0x7f or b >= 0xe0:  # fixints
    return msgpack.unpackb(head) if keep else None
  if 0x80 <= b <= 0x8f or b in (0xde, 0xdf):
    n = b & 0x0f if b <= 0x8f else reader.uint(2 if b == 0xde else 4)
    return _map_items(reader, n, keep)
  if 0x90 <= b <= 0x9f or b in (0xdc, 0xdd):
    n = b & 0x0f if b <= 0x9f else reader.uint(2 if b == 0xdc else 4)
    items = [_value(reader, keep) for _ in range(n)]
    return items if keep else None
  if 0xa0 <= b <= 0xbf or b in _SIZED:
    n = b & 0x1f if b <= 0xbf else reader.uint(_SIZED[b])
    if not keep:
      reader.skip(n)
      return None
    payload = reader.read(n)
    return payload.decode() if (b <= 0xbf or b >= 0xd9) else payload
  if b in _FIXED:
    data = reader.read(_FIXED[b])
    return msgpack.unpackb(head + data) if keep else None
  if b in _FIXEXT or b in _EXT:
    n = _FIXEXT[b] if b in _FIXEXT else reader.uint(_EXT[b])
    code = struct.unpack(">b", reader.read(1))[0]
    if not keep:
      reader.skip(n)
      return None
    return _decode_ext(code, reader.read(n))
  raise StreamFormatError(f"byte 0x{b:02x} at offset {reader.offset - 1} does "
                          "not start a msgpack object (not a flax msgpack file)")


def _map_items(reader: _Reader, n: int, keep: bool) -> Any:
  out = {} if keep else None
  for _ in range(n):
    key = _value(reader, True)
    value = _value(reader, keep)
    if keep:
      out[key] = value
  return out


def read_entries(stream: BinaryIO, wanted: Collection[str]) -> dict[str, Any]:
  """Decodes the ``wanted`` entries of a flax msgpack state's top-level map.

  Every other entry is skipped: its bytes are read and dropped, never kept, so
  memory holds only what is returned. The whole stream is consumed (a zip
  member's checksum is verified when its end is read).

  Args:
    stream: a binary stream positioned at the start of the state.
    wanted: top-level keys to decode (e.g. ``{"params", "step"}``).

  Returns:
    ``{key: tree}`` for the wanted keys present: dicts of numpy arrays (read
    only views of the decoded bytes) and Python scalars.

  Raises:
    StreamFormatError: the stream is not a msgpack map, or ends early.
  """
  reader = _Reader(stream)
  b = reader.read(1)[0]
  if 0x80 <= b <= 0x8f:
    n = b & 0x0f
  elif b in (0xde, 0xdf):
    n = reader.uint(2 if b == 0xde else 4)
  else:
    raise StreamFormatError(f"the data starts with byte 0x{b:02x}, not a "
                            "msgpack map: not a flax msgpack state")
  found = {}
  for _ in range(n):
    key = _value(reader, True)
    keep = key in wanted
    value = _value(reader, keep)
    if keep:
      found[key] = value
  if stream.read(1):
    raise StreamFormatError(f"unexpected data after the state's end at byte "
                            f"{reader.offset}")
  # Arrays over flax's chunk size were written as chunk dicts.
  return serialization._unchunk_array_leaves_in_place(found)  # pylint: disable=protected-access


def _pack_leaf(value: Any) -> Any:
  if hasattr(value, "__array__") and not isinstance(value, (np.ndarray,
                                                            np.generic)):
    value = np.asarray(value)  # jax arrays
  if isinstance(value, np.ndarray):
    return msgpack.ExtType(_EXT_NDARRAY, _array_bytes(value))
  if isinstance(value, np.generic):
    return msgpack.ExtType(_EXT_NPSCALAR, _array_bytes(np.asarray(value)))
  if isinstance(value, complex):
    return msgpack.ExtType(_EXT_COMPLEX,
                           msgpack.packb((value.real, value.imag)))
  return value


def _array_bytes(array: np.ndarray) -> bytes:
  if array.dtype.hasobject or array.dtype.isalignedstruct:
    raise ValueError("object and structured arrays cannot be serialised")
  if array.nbytes > serialization.MAX_CHUNK_SIZE:
    raise ValueError(f"an array of {array.nbytes} bytes is above flax's chunk "
                     "size; write it with flax.serialization instead")
  return msgpack.packb((array.shape, array.dtype.name, array.tobytes("C")),
                       use_bin_type=True)


def write_tree(stream: BinaryIO, tree: Any,
               leaf: Callable[[Any], Any] = lambda x: x) -> None:
  """Writes ``tree`` (dicts, lists, tuples, arrays, scalars) as flax msgpack.

  Leaf by leaf: memory holds one leaf's encoding at a time. ``leaf`` maps
  each non-container value before it is written (e.g. to host numpy).
  """
  packer = msgpack.Packer(use_bin_type=True, strict_types=True)
  if isinstance(tree, Mapping):
    stream.write(packer.pack_map_header(len(tree)))
    for key, value in tree.items():
      stream.write(packer.pack(key))
      write_tree(stream, value, leaf)
  elif isinstance(tree, (list, tuple)):
    stream.write(packer.pack_array_header(len(tree)))
    for value in tree:
      write_tree(stream, value, leaf)
  else:
    stream.write(packer.pack(_pack_leaf(leaf(tree))))
