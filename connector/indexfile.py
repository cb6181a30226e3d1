"""A prebuilt catalogue index on disk, shared by the processes of one machine.

Building the index of a large catalogue takes seconds (about 9 s at 10,000 services) in
every process that classifies, after every restart. The first process builds it and writes
it under the data folder, named by a hash of everything it is built from; the others — and
the next start — load it instead: the pickled Python part is read, and the numpy arrays are
views of the memory-mapped file, so the processes share their pages.

The name's hash covers the catalogue file as written, the shipped thesaurus and domain pack
files with the packs chosen ($BPSM_DOMAIN_PACKS), the language data, the code (every module
of the connector package) and the Python and numpy versions: a changed input makes a new
file, never a stale index. Learned evidence is not part of it: a learned file attaches to
a built index at run time (CatalogueIndex.with_learned), so it is never in the file.

A file is written to a temporary name and renamed — never changed in place: the processes
that map it would lose its pages — and carries its length and a checksum:
a truncated or damaged file (a crash, a full disk) is rebuilt, never trusted. A lock file
beside it keeps processes that start together from building the same index twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import hashlib
import io
import logging
import mmap
import os
import pickle
import struct
import sys
import tempfile
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from connector.catalogue import Catalogue, load_catalogue
from connector.classify import PACKS_VARIABLE, CatalogueIndex, build_index, parse_packs
from connector.datadir import FILE_MODE, open_private, private_dir
from connector.logs import log_extra

log = logging.getLogger("bpsm.indexfile")

# Catalogues of more services than this load a prebuilt index (when a data folder is
# given). Measured 2026-12-07 (bench/README.md): a build takes 0.8 s at 32 services, 1.7 s
# at 1,000; loading the file 0.05 s and 0.2 s. Below a few hundred services building is
# as quick as reading the catalogue, and a file per test catalogue would only pile up.
PREBUILT_ABOVE = 300
FOLDER = "index"
SUFFIX = ".idx"
CATALOGUE_SUFFIX = ".catalogue"
KEEP = 4  # index files kept in the folder (the newest): other catalogues, older versions
_MAGIC = b"BPSMIDX1"
# magic, checksum of everything after the header, pickle length, number of buffers
_HEADER = struct.Struct("<8sIQQ")
_ALIGN = 64


def _code_files() -> Iterator[tuple[str, bytes]]:
    """Every module and data file of the connector package, by path: the index depends on
    the classifier's code, the text functions and the language data and thesaurus."""
    root = Path(str(resources.files("connector")))
    for path in sorted(root.rglob("*")):
        if path.suffix in (".py", ".yaml", ".yml", ".json", ".txt") and "__pycache__" not in (
            path.parts
        ):
            yield str(path.relative_to(root)), path.read_bytes()


def index_key(
    catalogue_text: bytes,
    packs: str | None,
    sources: Iterable[tuple[str, bytes]] | None = None,
) -> str:
    """The hash that names the prebuilt index of a catalogue (its file's bytes), a pack
    selection ($BPSM_DOMAIN_PACKS as written; parsed, so "a,b" and "b,a" agree) and the
    code and data files (`sources`: by default the connector package's)."""
    digest = hashlib.sha256()
    digest.update(b"catalogue\0" + catalogue_text)
    digest.update(b"\0packs\0" + ",".join(sorted(parse_packs(packs))).encode())
    digest.update(f"\0python {sys.version}\0numpy {np.__version__}\0".encode())
    digest.update(_code_digest() if sources is None else _sources_digest(sources))
    return digest.hexdigest()[:32]


@cache
def _code_digest() -> bytes:
    """The connector package's code and data files, hashed once per process: the kept
    catalogue and the index are both named by it, and the running code does not change."""
    return _sources_digest(_code_files())


def _sources_digest(sources: Iterable[tuple[str, bytes]]) -> bytes:
    digest = hashlib.sha256()
    for name, content in sources:
        digest.update(name.encode() + b"\0" + hashlib.sha256(content).digest())
    return digest.digest()


def index_path(data_dir: Path, catalogue_path: Path, packs: str | None = None) -> Path:
    """Where the prebuilt index of this catalogue file (and thesaurus, packs, code) lives."""
    key = index_key(catalogue_path.read_bytes(), packs)
    return data_dir / FOLDER / f"{key}{SUFFIX}"


def write_index(index: CatalogueIndex, path: Path) -> None:
    """Write `index` to `path` atomically (see write_file), without its catalogue: the
    reader has the catalogue already (read_index), and unpickling 10,000 services twice was
    a tenth of a restart. The file names the catalogue's services, to check it is the one."""
    for part in (index, index.outside):  # what the process met in tickets is not the index
        if part is not None:
            part.clear_memos()
    catalogue = index.catalogue
    write_file((_service_ids(catalogue), index), path, (catalogue, *catalogue.services))


def _service_ids(catalogue: Catalogue) -> tuple[str, ...]:
    return tuple(service.id for service in catalogue.services)


class _Pickler(pickle.Pickler):
    """Pickles the objects of `known` as their position in it (see read_file)."""

    def __init__(self, file: io.BytesIO, known: Sequence[object], **kwargs: Any) -> None:
        super().__init__(file, protocol=5, **kwargs)
        self.known = {id(thing): number for number, thing in enumerate(known)}

    def persistent_id(self, obj: object) -> int | None:
        return self.known.get(id(obj))


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, known: Sequence[object], **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self.known = known

    def persistent_load(self, pid: object) -> object:
        if not isinstance(pid, int) or not 0 <= pid < len(self.known):
            raise ValueError("the file refers to an object the reader did not give")
        return self.known[pid]


def write_file(value: object, path: Path, known: Sequence[object] = ()) -> None:
    """Write `value` to `path` atomically (a temporary file beside it, then a rename): the
    pickled value with its numpy arrays out of band, each at an aligned offset, so that a
    reader maps them instead of copying them. The objects of `known` are not written, only
    their places in it: the reader gives them (read_file)."""
    buffers: list[pickle.PickleBuffer] = []
    stream = io.BytesIO()
    _Pickler(stream, known, buffer_callback=buffers.append).dump(value)
    body = stream.getbuffer()
    views = [buffer.raw() for buffer in buffers]
    table = b"".join(struct.pack("<QQ", 0, len(view)) for view in views)
    offset = _HEADER.size + len(table) + len(body)
    placed: list[tuple[int, memoryview]] = []
    for view in views:
        offset = -(-offset // _ALIGN) * _ALIGN
        placed.append((offset, view))
        offset += len(view)
    table = b"".join(struct.pack("<QQ", at, len(view)) for at, view in placed)
    private_dir(path.parent)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(b"\0" * _HEADER.size)
            checksum = zlib.crc32(table)
            handle.write(table)
            checksum = zlib.crc32(body, checksum)
            handle.write(body)
            for at, view in placed:
                padding = b"\0" * (at - handle.tell())
                checksum = zlib.crc32(view, zlib.crc32(padding, checksum))
                handle.write(padding)
                handle.write(view)
            handle.seek(0)
            handle.write(_HEADER.pack(_MAGIC, checksum, len(body), len(views)))
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, FILE_MODE)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read_index(path: Path, catalogue: Catalogue) -> CatalogueIndex:
    """The index of `catalogue` in `path` (see write_index), its arrays read-only views of
    the mapped file. Raises ValueError for a file that is not a whole, undamaged index file,
    or is another catalogue's."""
    found = read_file(path, (catalogue, *catalogue.services))
    if not (isinstance(found, tuple) and len(found) == 2 and isinstance(found[1], CatalogueIndex)):
        raise ValueError("the file holds no catalogue index")
    if found[0] != _service_ids(catalogue):
        raise ValueError("the file holds the index of another catalogue")
    return found[1]


def read_file(path: Path, known: Sequence[object] = ()) -> object:
    """What write_file wrote to `path` (with the same `known` objects), its arrays
    read-only views of the mapped file. Raises ValueError for a file that is not whole and
    undamaged."""
    with open(path, "rb") as handle:
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    view = memoryview(mapped)
    if len(view) < _HEADER.size:
        raise ValueError("too short for an index file")
    magic, checksum, body_size, count = _HEADER.unpack_from(view)
    table_end = _HEADER.size + 16 * count
    if magic != _MAGIC or table_end + body_size > len(view):
        raise ValueError("not an index file, or cut short")
    places = [struct.unpack_from("<QQ", view, _HEADER.size + 16 * n) for n in range(count)]
    end = max((at + size for at, size in places), default=table_end + body_size)
    if end != len(view) or zlib.crc32(view[_HEADER.size :]) != checksum:
        raise ValueError("damaged index file (length or checksum)")
    body = view[table_end : table_end + body_size]
    collecting = gc.isenabled()
    gc.disable()  # 100,000s of objects and no cycles: as build() does
    try:
        value: object = _Unpickler(
            io.BytesIO(body), known, buffers=[view[at : at + size] for at, size in places]
        ).load()
    finally:
        if collecting:
            gc.enable()
    return value


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (a lock file beside the index) while building."""
    fd = open_private(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _prune(folder: Path, keep: Path) -> None:
    """Remove all but the KEEP newest files of `keep`'s kind (a process that maps one still
    reads it: an unlinked file lives on until it is unmapped)."""
    files = sorted(folder.glob(f"*{keep.suffix}"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in [f for f in files if f != keep][KEEP - 1 :]:
        with contextlib.suppress(OSError):
            old.unlink()
            Path(f"{old}.lock").unlink(missing_ok=True)


def load_or_build_index(
    catalogue: Catalogue, catalogue_path: Path, data_dir: Path | None
) -> tuple[CatalogueIndex, str]:
    """The catalogue's index: from its prebuilt file when there is one, else built (and,
    for a catalogue of more than PREBUILT_ABOVE services, written for the next process).
    Returns how it came: "loaded", "built" (and written) or "built, not kept" (a small
    catalogue or no data folder). A file that cannot be read is rebuilt and replaced."""
    if data_dir is None or len(catalogue.services) <= PREBUILT_ABOVE:
        return build_index(catalogue), "built, not kept"
    try:
        path = index_path(data_dir, catalogue_path, os.environ.get(PACKS_VARIABLE))
    except OSError as exc:  # the catalogue file went away since it was read
        log.warning("no prebuilt index: %s", exc)
        return build_index(catalogue), "built, not kept"
    private_dir(path.parent)
    with _locked(Path(f"{path}.lock")):
        if path.exists():
            try:
                return read_index(path, catalogue), "loaded"
            except Exception as exc:  # a damaged file is rebuilt, whatever is wrong with it
                log.warning("prebuilt index %s unreadable (%s): rebuilding it", path.name, exc)
        started = time.perf_counter()
        index = build_index(catalogue)
        built = time.perf_counter() - started
        try:
            write_index(index, path)
            _prune(path.parent, path)
        except OSError as exc:  # a full disk costs the next start a build, nothing more
            log.warning("prebuilt index not written: %s", exc)
            return index, "built, not kept"
        log.info(
            "prebuilt index written",
            extra=log_extra({"file": path.name, "build_s": round(built, 2)}),
        )
        try:  # this process too reads the mapped file: its pages are then shared
            return read_index(path, catalogue), "built"
        except Exception as exc:
            log.warning("prebuilt index %s unreadable after writing (%s)", path.name, exc)
            return index, "built"


def load_catalogue_cached(path: Path, data_dir: Path | None) -> Catalogue:
    """The catalogue in `path`. A large one's parsed form is kept beside its prebuilt index,
    named by the same kind of hash (the file's bytes and the code), and read from there
    while the file is unchanged: parsing YAML with every line tracked for error messages
    takes about 20 s at 10,000 services, which a restarting worker should not pay. A
    catalogue with mistakes is never kept: it raises CatalogueError as load_catalogue does."""
    if data_dir is None:
        return load_catalogue(path)
    try:
        cached = data_dir / FOLDER / f"{index_key(path.read_bytes(), None)}{CATALOGUE_SUFFIX}"
    except OSError:
        return load_catalogue(path)  # its error names the file and what is wrong
    if cached.exists():
        try:
            found = read_file(cached)
            if isinstance(found, Catalogue):
                return found
        except Exception as exc:  # damaged: parsed again and replaced, whatever is wrong
            log.warning("kept catalogue %s unreadable (%s): reading the YAML", cached.name, exc)
    catalogue = load_catalogue(path)
    if len(catalogue.services) > PREBUILT_ABOVE:
        try:
            private_dir(cached.parent)
            write_file(catalogue, cached)
            _prune(cached.parent, cached)
        except OSError as exc:  # a full disk costs the next start a parse, nothing more
            log.warning("parsed catalogue not kept: %s", exc)
    return catalogue
