"""A content-hashed per-example cache for expensive host-side computations.

Anything computed once per image in the input pipeline (HSG's coherent regions;
superpixels next) goes through `ExampleCache.get_or_compute(example, compute)`:
the first sighting of an image computes and stores the result, later epochs
decode it. The key hashes

  * the bytes, shape and dtype of every example field the computation reads
    (`fields`), so the same image under another index hits and a changed
    image misses;
  * the computation's `settings` (a JSON-able mapping: its name, options,
    a version number to bump when its code changes), so a changed setting
    never reads a stale entry.

Stores (`MemoryStore`: this process, bounded, least recently used leave
first; `DiskStore`: one compressed .npz per entry under a folder shared by
threads, processes and runs). An entry that cannot be read back (truncated,
corrupted, another key's, failing the caller's check) is recomputed and
overwritten with a RuntimeWarning naming it: the cache holds derived data
only, so recomputing is always correct. Thread-safe: grain calls transforms
from several threads; two threads meeting the same new image may both compute
it (same result) instead of waiting.
"""
from __future__ import annotations

import collections
import hashlib
import io
import json
import os
import pathlib
import tempfile
import threading
import warnings
import zipfile
import zlib
from typing import Any, Callable, Mapping, Sequence

import numpy as np

Example = dict[str, np.ndarray]
KEY = "key"  # the name under which every entry stores its own key


class CacheEntryError(ValueError):
  """A cache entry that cannot be read back (truncated, corrupted, another key's, ...)."""


def encode_arrays(arrays: Mapping[str, np.ndarray], *, key: str) -> bytes:
  """Bytes of a compressed .npz holding `arrays` and the entry's `key`."""
  if KEY in arrays:
    raise ValueError(f"encode_arrays: the name {KEY!r} is reserved for the entry's key")
  buffer = io.BytesIO()
  np.savez_compressed(buffer, key=np.asarray(key), **arrays)
  return buffer.getvalue()


def decode_arrays(data: bytes, *, key: str, names: Sequence[str]) -> dict[str, np.ndarray]:
  """The arrays `names` of an `encode_arrays` entry of `key`; CacheEntryError otherwise."""
  if not data.startswith(b"PK\x03\x04"):
    raise CacheEntryError(f"not an .npz file ({len(data)} bytes)")
  try:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
      stored = sorted(npz.files)
      arrays = {name: npz[name] for name in stored}
  except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as err:
    raise CacheEntryError(f"unreadable ({type(err).__name__}: {err})") from err
  if stored != sorted([KEY, *names]):
    raise CacheEntryError(f"expected arrays {sorted([KEY, *names])}; got {stored}")
  if str(arrays[KEY]) != key:
    raise CacheEntryError(f"holds the entry of key {str(arrays[KEY])!r}, not {key!r}")
  return {name: arrays[name] for name in names}


class MemoryStore:
  """At most `capacity` encoded entries in this process; least recently used leave first.

  Thread-safe. Pickles empty: each grain worker process fills its own.
  """

  def __init__(self, capacity: int):
    self.capacity = capacity
    self._entries: collections.OrderedDict[str, bytes] = collections.OrderedDict()
    self._lock = threading.Lock()

  def where(self, key: str) -> str:
    return f"in-memory cache entry {key}"

  def get(self, key: str) -> bytes | None:
    with self._lock:
      data = self._entries.get(key)
      if data is not None:
        self._entries.move_to_end(key)
      return data

  def put(self, key: str, data: bytes) -> None:
    with self._lock:
      self._entries[key] = data
      self._entries.move_to_end(key)
      while len(self._entries) > self.capacity:
        self._entries.popitem(last=False)

  def __len__(self) -> int:
    with self._lock:
      return len(self._entries)

  def __getstate__(self):
    return {"capacity": self.capacity}

  def __setstate__(self, state):
    self.__init__(state["capacity"])


class DiskStore:
  """One file `folder/<key[:2]>/<key>.npz` per entry, shared by threads, processes, runs.

  Writes go to a temporary file in the same folder, then `os.replace` (atomic): a
  reader sees the whole old file, the whole new one or none, never half of one. A
  process killed mid-write leaves a `.<key>.*.tmp` file that nothing reads. Not
  fsync'ed: after a power loss a file may be damaged, which decoding detects.
  """

  def __init__(self, folder: str | os.PathLike, *, owner: str = "cache"):
    self.folder = pathlib.Path(folder)
    try:
      self.folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
      raise OSError(f"{owner}: cannot create option `cache_dir` {str(folder)!r}: "
                    f"{err}") from err

  def path(self, key: str) -> pathlib.Path:
    return self.folder / key[:2] / f"{key}.npz"  # 256 subfolders: no huge directory

  def where(self, key: str) -> str:
    return f"cache file {str(self.path(key))!r}"

  def get(self, key: str) -> bytes | None:
    try:
      return self.path(key).read_bytes()
    except FileNotFoundError:
      return None

  def put(self, key: str, data: bytes) -> None:
    path = self.path(key)
    path.parent.mkdir(exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{key}.", suffix=".tmp")
    try:
      os.fchmod(fd, 0o644)  # derived data, readable by whoever shares the folder
      with os.fdopen(fd, "wb") as file:
        file.write(data)
      os.replace(temporary, path)
    except BaseException:
      if os.path.exists(temporary):
        os.unlink(temporary)
      raise


def make_store(cache_dir: str | os.PathLike | None, cache_entries: int, *,
               owner: str = "cache") -> MemoryStore | DiskStore | None:
  """A DiskStore under `cache_dir` if set, else a MemoryStore of `cache_entries`
  (None when 0: no cache)."""
  if int(cache_entries) < 0:
    raise ValueError(f"{owner}: option `cache_entries` must be >= 0 (0 = no memory cache); "
                     f"got {cache_entries}")
  if cache_dir:
    return DiskStore(cache_dir, owner=owner)
  return MemoryStore(int(cache_entries)) if int(cache_entries) else None


class ExampleCache:
  """Content-hashed cache of `compute(example) -> {name: array}` (module docstring).

  Args:
    settings: JSON-able description of the computation (name, options, version).
    fields: the example fields the computation reads (hashed into the key).
    names: the names of the arrays an entry stores (after `encode`).
    cache_dir: "" for the in-memory store, else a folder (DiskStore).
    cache_entries: capacity of the in-memory store (0: no cache at all).
    owner: names the cache's user in warnings and errors.
  """

  def __init__(self, *, settings: Mapping[str, Any], fields: Sequence[str],
               names: Sequence[str], cache_dir: str | os.PathLike | None = "", cache_entries: int = 4096,
               owner: str = "cache"):
    self.owner = owner
    self.fields = tuple(fields)
    self.names = tuple(names)
    self.store = make_store(cache_dir, cache_entries, owner=owner)
    self._settings = hashlib.blake2b(json.dumps(dict(settings), sort_keys=True).encode()).digest()

  def key(self, example: Example) -> str:
    """Hex key of `example` under these settings."""
    digest = hashlib.blake2b(self._settings, digest_size=20)
    for field in self.fields:
      if field not in example:  # the computation will raise; never match a complete example
        digest.update(f"{field}:missing;".encode())
        continue
      value = np.ascontiguousarray(example[field])
      digest.update(f"{field}:{value.dtype.str}{value.shape};".encode())
      digest.update(value.reshape(-1).view(np.uint8))
    return digest.hexdigest()

  def get_or_compute(self, example: Example,
                     compute: Callable[[Example], Mapping[str, np.ndarray]], *, encode: Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]
                     = dict,
                     decode: Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]
                     = dict) -> dict[str, np.ndarray]:
    """`compute(example)`, from the store when there.

    `encode` maps the result to the arrays stored (e.g. a smaller dtype) and
    `decode` back, raising CacheEntryError when a stored entry does not fit the
    example (wrong shape, out-of-range values): it is then recomputed.
    """
    if self.store is None:
      return dict(compute(example))
    key = self.key(example)
    data = self.store.get(key)
    if data is not None:
      try:
        arrays = decode_arrays(data, key=key, names=self.names)
        return dict(decode(arrays))
      except CacheEntryError as err:
        warnings.warn(f"{self.owner}: {self.store.where(key)}: {err}; recomputing it",
                      RuntimeWarning, stacklevel=3)
    result = dict(compute(example))
    self.store.put(key, encode_arrays(encode(result), key=key))
    return result
