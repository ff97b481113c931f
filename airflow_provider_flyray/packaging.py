"""Local code for a Ray job: a runtime_env's local ``working_dir`` / ``py_modules`` paths as Ray packages.

Pure functions over the local filesystem (no network, no ``ray`` import): find the local paths of a
runtime_env, check them, walk them as Ray's client does (``excludes``, every ``.gitignore`` and
``.rayignore``), name each package by content hash exactly as Ray 2.60's client names it (so a package
either side uploaded is the other's too), and write a deterministic zip. The upload itself is
:mod:`airflow_provider_flyray.core.dashboard`; the operator's steps are
:mod:`airflow_provider_flyray.operators.shipping`.

Ray's names (``ray/_private/runtime_env/packaging.py``): a directory is ``gcs://_ray_pkg_<h>.zip``
where ``h`` XORs ``sha1(relative path + bytes)`` of every included path (directories: their path only)
into 8 bytes starting from ``b"0" * 8``; a ready ``.zip`` is ``gcs://_ray_pkg_<sha1 of its bytes>.zip``;
a ``.whl`` keeps its file name (``gcs://<name>.whl``); a single ``.py`` module hashes like a one-entry
directory. The zip's bytes are not part of the name, so ours need not equal Ray's.
"""

from __future__ import annotations

import hashlib
import os
import stat
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from dataclasses import field as dataclass_field
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from airflow_provider_flyray.errors import ConfigError

RAY_PKG_PREFIX = "_ray_pkg_"
# Ray 2.60's dashboard (an aiohttp server started with client_max_size=DASHBOARD_CLIENT_MAX_SIZE,
# 100 MiB) answers 413 to a larger PUT body; the GCS's own bound (max_grpc_message_size, 512 MiB) is
# higher, so the dashboard's is the limit of the REST upload.
MAX_PACKAGE_BYTES = 100 * 1024 * 1024
# Ray 2.60's RAY_RUNTIME_ENV_DEFAULT_EXCLUDES: applied to working_dir only (not py_modules), and read from
# the same variable as Ray's client reads, so both sides name a directory alike.
DEFAULT_EXCLUDES = ".git,.venv,venv,__pycache__"
DEFAULT_EXCLUDES_ENV = "RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES"
IGNORE_GITIGNORE_ENV = "RAY_RUNTIME_ENV_IGNORE_GITIGNORE"
READ_CHUNK = 1024 * 1024
# A fixed timestamp and fixed modes: the same tree always gives the same zip bytes.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_DIR_MODE = (stat.S_IFDIR | 0o755) << 16 | 0x10
# Per-entry bytes a zip adds (local header, data descriptor, central directory, zip64 extras) beyond
# twice the name; used for an upper bound of the package's size without writing it.
_ENTRY_OVERHEAD = 30 + 16 + 46 + 2 * 28


class Kind(StrEnum):
    """How a local path becomes a package (decides the hash, the zip layout and the excludes)."""

    WORKING_DIR = "working_dir"  # a directory: entries relative to it; default excludes apply
    MODULE_DIR = "module_dir"  # a py_modules directory: entries under its own name (``import <name>``)
    MODULE_FILE = "module_file"  # a py_modules ``.py`` file: a one-entry zip
    ARCHIVE = "archive"  # a ready ``.zip`` or ``.whl``: uploaded as it is


@dataclass(frozen=True)
class LocalPackage:
    """One package to ship: plain, secret-free data (it travels in the trigger's kwargs and events)."""

    field: str  # e.g. "runtime_env.py_modules[1]", for messages
    uri: str  # what the runtime_env says instead of the path: gcs://_ray_pkg_<hash>.zip
    path: str  # absolute path on the worker
    kind: str
    size: int  # bytes of the upload: exact for an archive, an upper bound for a directory
    excludes: list[str] = dataclass_field(default_factory=list)
    gitignore: bool = True
    # Times the worker uploaded it for this submission (a package that keeps going missing fails).
    uploads: int = 0

    @property
    def name(self) -> str:
        return self.uri.removeprefix("gcs://")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LocalPackage:
        return cls(**data)

    def uploaded(self) -> LocalPackage:
        return replace(self, uploads=self.uploads + 1)


@dataclass(frozen=True)
class Entry:
    """A path of a package: its hash name (relative to the hashed root) and its name in the zip."""

    path: Path
    hash_name: str
    arcname: str | None  # None: hashed but not written (a directory that has entries)
    is_dir: bool


def is_remote(value: str) -> bool:
    """A URI (``s3://``, ``gs://``, ``https://``, ``gcs://``, ``file://``...): Ray fetches it, we pass it on."""
    return "://" in value


def local_packages(
    runtime_env: dict[str, Any] | None, base_dir: str | None, env: Mapping[str, str] | None = None
) -> tuple[dict[str, Any] | None, list[LocalPackage]]:
    """The runtime_env with each local ``working_dir`` / ``py_modules`` path replaced by its package URI,
    and those packages. Every path is checked and hashed here (streaming reads); nothing is zipped unless
    a directory may be over the size limit. Relative paths are relative to ``base_dir`` (the DAG file's
    folder) when given."""
    if not runtime_env:
        return runtime_env, []
    env = os.environ if env is None else env
    gitignore = env.get(IGNORE_GITIGNORE_ENV, "0") != "1"
    user_excludes = list(runtime_env.get("excludes") or [])
    packages: list[LocalPackage] = []
    out = dict(runtime_env)
    working_dir = runtime_env.get("working_dir")
    if isinstance(working_dir, str) and not is_remote(working_dir):
        defaults = [x.strip() for x in env.get(DEFAULT_EXCLUDES_ENV, DEFAULT_EXCLUDES).split(",") if x.strip()]
        package = package_for(
            "runtime_env.working_dir", working_dir, base_dir, True, defaults + user_excludes, gitignore
        )
        out["working_dir"] = package.uri
        packages.append(package)
    modules = runtime_env.get("py_modules")
    if isinstance(modules, list):
        uris = []
        for i, module in enumerate(modules):
            if not isinstance(module, str) or is_remote(module):
                uris.append(module)
                continue
            package = package_for(f"runtime_env.py_modules[{i}]", module, base_dir, False, user_excludes, gitignore)
            uris.append(package.uri)
            packages.append(package)
        out["py_modules"] = uris
    return out, packages


def package_for(
    field_name: str, value: str, base_dir: str | None, working_dir: bool, excludes: list[str], gitignore: bool
) -> LocalPackage:
    """Check one local path and name its package (see the module's docstring for Ray's names)."""
    path = Path(os.path.expanduser(value))
    if not path.is_absolute():
        path = Path(base_dir or os.getcwd()) / path
    path = Path(os.path.abspath(path))
    accepted = "a directory or a .zip file" if working_dir else "a directory, a .py, .zip or .whl file"
    if not path.exists():
        where = f" (relative paths are relative to {base_dir})" if base_dir and not Path(value).is_absolute() else ""
        raise ConfigError(
            field_name,
            f"{str(path)!r} does not exist on the Airflow worker{where}; expected {accepted}, "
            "or a remote URI such as s3://bucket/code.zip",
        )
    if path.is_dir():
        if not os.access(path, os.R_OK | os.X_OK):
            raise ConfigError(field_name, f"{str(path)!r} is not readable by the Airflow worker; fix its permissions")
        kind = Kind.WORKING_DIR if working_dir else Kind.MODULE_DIR
        digest, size = hash_directory(field_name, path, kind, excludes, gitignore)
        package = LocalPackage(field_name, f"gcs://{RAY_PKG_PREFIX}{digest}.zip", str(path), kind.value, size, excludes)
        package = replace(package, gitignore=gitignore)
        if size > MAX_PACKAGE_BYTES:
            # The bound is the uncompressed size: only the zip itself says whether it fits.
            package = replace(package, size=measure_zip(package))
        check_size(package)
        return package
    suffix = path.suffix.lower()
    if not path.is_file() or suffix not in ((".zip",) if working_dir else (".zip", ".whl", ".py")):
        raise ConfigError(field_name, f"{str(path)!r} is not {accepted}")
    if not os.access(path, os.R_OK):
        raise ConfigError(field_name, f"{str(path)!r} is not readable by the Airflow worker; fix its permissions")
    size = path.stat().st_size
    if suffix == ".py":
        module_digest = _xor(b"0" * 8, _sha1_of(field_name, path, path.name.encode()))
        uri, kind = f"gcs://{RAY_PKG_PREFIX}{module_digest.hex()}.zip", Kind.MODULE_FILE
        size += _ENTRY_OVERHEAD + 2 * len(path.name) + size // 1000 + 64
    elif suffix == ".whl":
        # Ray names a wheel by its file name (name, version and tags already identify it).
        uri, kind = f"gcs://{path.name}", Kind.ARCHIVE
    else:
        uri, kind = f"gcs://{RAY_PKG_PREFIX}{_sha1_of(field_name, path, b'').hex()}.zip", Kind.ARCHIVE
    package = LocalPackage(field_name, uri, str(path), kind.value, size, [], gitignore)
    check_size(package)
    return package


def check_size(package: LocalPackage) -> None:
    if package.size > MAX_PACKAGE_BYTES:
        raise ConfigError(
            package.field,
            f"{package.path!r} makes a package of {_mib(package.size)}, over the {_mib(MAX_PACKAGE_BYTES)} a Ray "
            "dashboard accepts; add large files to runtime_env['excludes'] (or .gitignore), or put the code "
            "on object storage (s3://, gs://) and give its URI",
        )


def _mib(size: int) -> str:
    return f"{size / 1024**2:.1f} MiB"


def _xor(left: bytes, right: bytes) -> bytes:
    # As Ray's _xor_bytes: zip() keeps the shorter length, so the 8-byte accumulator stays 8 bytes.
    return bytes(a ^ b for a, b in zip(left, right, strict=False))


def _sha1_of(field_name: str, path: Path, prefix: bytes) -> bytes:
    digest = hashlib.sha1(prefix)
    for chunk in _read(field_name, path):
        digest.update(chunk)
    return digest.digest()


def _read(field_name: str, path: Path) -> Iterator[bytes]:
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(READ_CHUNK):
                yield chunk
    except OSError as exc:
        raise ConfigError(
            field_name,
            f"cannot read {str(path)!r} on the Airflow worker ({exc.strerror or exc}); fix its "
            "permissions or add it to runtime_env['excludes']",
        ) from None


def _matcher(base: Path, patterns: list[str]) -> Callable[[Path], bool]:
    import pathspec

    with warnings.catch_warnings():
        # pathspec >= 1.0 deprecates the name; Ray (vendored pathspec 0.8) matches with exactly this one.
        warnings.simplefilter("ignore", DeprecationWarning)
        spec = pathspec.PathSpec.from_lines("gitwildmatch", patterns)
    return lambda p: spec.match_file(str(p.relative_to(base)))


def _ignore_files(field_name: str, directory: Path, gitignore: bool) -> list[Callable[[Path], bool]]:
    found = []
    for name in (".gitignore", ".rayignore") if gitignore else (".rayignore",):
        ignore = directory / name
        if ignore.is_file():
            try:
                lines = ignore.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
            except OSError as exc:
                raise ConfigError(field_name, f"cannot read {str(ignore)!r}: {exc.strerror or exc}") from None
            found.append(_matcher(directory, lines))
    return found


def walk(
    field_name: str, root: Path, kind: Kind, excludes: list[str], gitignore: bool, file_only: bool = False
) -> Iterator[Entry]:
    """The paths of a package, in a fixed (sorted) order, as Ray's ``_dir_travel`` selects them: a path
    is skipped (with everything under it) when ``excludes`` (relative to the root) or an ignore file
    of a directory above it, or of itself, matches it. Symlinks are followed, as Ray does, but only
    inside the tree: one that leaves it (or loops) is refused, since Ray would ship whatever it points
    at."""
    real_root = root.resolve()
    # A py_modules directory keeps its own name as the top entry (``import <name>``); a working_dir does not.
    zip_base = root if kind is Kind.WORKING_DIR else root.parent

    def visit(path: Path, matchers: list[Callable[[Path], bool]]) -> Iterator[Entry]:
        try:
            is_dir = path.is_dir()
            if is_dir:
                matchers = matchers + _ignore_files(field_name, path, gitignore)
            if any(match(path) for match in matchers):
                return
            if path.is_symlink():
                _check_symlink(field_name, path, real_root, root)
            children = sorted(path.iterdir()) if is_dir else []
        except PermissionError as exc:
            raise ConfigError(
                field_name,
                f"cannot read {str(path)!r} on the Airflow worker ({exc.strerror}); fix its "
                "permissions or add it to runtime_env['excludes']",
            ) from None
        if not is_dir and not path.is_file():
            raise ConfigError(
                field_name,
                f"{str(path)!r} is not a regular file (a socket, FIFO or device, or a broken "
                "symlink); add it to runtime_env['excludes']",
            )
        # Ray writes files and empty directories; a directory with entries is only hashed.
        arcname = str(path.relative_to(zip_base)) if not is_dir or not children else None
        if arcname == ".":
            arcname = None  # an empty working_dir: nothing to write
        elif arcname is not None and is_dir:
            arcname += "/"
        yield Entry(path, str(path.relative_to(root.parent if file_only else root)), arcname, is_dir)
        for child in children:
            yield from visit(child, matchers)

    yield from visit(root, [_matcher(root, excludes)])


def _check_symlink(field_name: str, path: Path, real_root: Path, root: Path) -> None:
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):
        raise ConfigError(
            field_name, f"{str(path)!r} is a broken or looping symlink; remove it or add it to runtime_env['excludes']"
        ) from None
    if not target.is_relative_to(real_root):
        raise ConfigError(
            field_name,
            f"{str(path)!r} is a symlink to {str(target)!r}, outside {str(root)!r}: Ray would ship what it points "
            "at; copy that into the directory, or add the link to runtime_env['excludes']",
        )
    if target.is_dir() and path.parent.resolve().is_relative_to(target):
        raise ConfigError(
            field_name, f"{str(path)!r} links back to a directory above it (a loop); add it to runtime_env['excludes']"
        )


def hash_directory(field_name: str, root: Path, kind: Kind, excludes: list[str], gitignore: bool) -> tuple[str, int]:
    """Ray's hash of a directory (16 hex digits) and an upper bound of its zip's size."""
    digest = b"0" * 8
    size = 22  # the end-of-central-directory record
    for entry in walk(field_name, root, kind, excludes, gitignore):
        sha = hashlib.sha1(entry.hash_name.encode())
        if not entry.is_dir:
            nbytes = 0
            for chunk in _read(field_name, entry.path):
                sha.update(chunk)
                nbytes += len(chunk)
            # Deflate never grows data by more than ~0.1% (stored blocks).
            size += nbytes + nbytes // 1000 + 64
        if entry.arcname is not None:
            size += _ENTRY_OVERHEAD + 2 * len(entry.arcname.encode())
        digest = _xor(digest, sha.digest())
    return digest.hex(), size


class PackageTooLarge(Exception):
    """The zip being written passed the limit (raised while writing, so a huge tree is not zipped whole)."""


class PackageChanged(Exception):
    """The tree's hash is not the one its package was named by: it changed since the task hashed it."""


def write_zip(package: LocalPackage, out: IO[bytes], limit: int | None = MAX_PACKAGE_BYTES) -> None:
    """Write the package of a directory or ``.py`` module to ``out`` (a seekable binary file),
    deterministically: sorted entries, fixed timestamps and modes, deflate. Each file is read once, in
    chunks, for the zip and the hash together; the hash must still give the package's URI, else
    :class:`PackageChanged`. Over ``limit`` bytes written: :class:`PackageTooLarge`."""
    kind = Kind(package.kind)
    root = Path(package.path)
    digest = b"0" * 8
    file_only = kind is Kind.MODULE_FILE
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for entry in walk(package.field, root, kind, package.excludes, package.gitignore, file_only=file_only):
            sha = hashlib.sha1(entry.hash_name.encode())
            if entry.arcname is not None and entry.is_dir:
                info = zipfile.ZipInfo(entry.arcname, ZIP_EPOCH)
                info.external_attr = _DIR_MODE
                archive.writestr(info, b"")
            elif not entry.is_dir:
                info = zipfile.ZipInfo(entry.arcname or entry.path.name, ZIP_EPOCH)
                info.compress_type = zipfile.ZIP_DEFLATED
                executable = os.access(entry.path, os.X_OK)
                info.external_attr = (stat.S_IFREG | (0o755 if executable else 0o644)) << 16
                with archive.open(info, "w", force_zip64=True) as member:
                    for chunk in _read(package.field, entry.path):
                        sha.update(chunk)
                        member.write(chunk)
                        if limit is not None and out.tell() > limit:
                            raise PackageTooLarge(out.tell())
            digest = _xor(digest, sha.digest())
    if limit is not None and out.tell() > limit:
        raise PackageTooLarge(out.tell())
    if f"gcs://{RAY_PKG_PREFIX}{digest.hex()}.zip" != package.uri:
        raise PackageChanged(package.path)


def archive_unchanged(package: LocalPackage) -> bool:
    """A ready ``.zip`` still has the bytes its name was made from (a wheel is named by its file name)."""
    path = Path(package.path)
    if path.suffix.lower() == ".whl":
        return path.is_file()
    return f"gcs://{RAY_PKG_PREFIX}{_sha1_of(package.field, path, b'').hex()}.zip" == package.uri


def measure_zip(package: LocalPackage) -> int:
    """The real size of a directory's zip (written to a temporary file and dropped), or refuse it."""
    import tempfile

    with tempfile.TemporaryFile() as scratch:
        try:
            write_zip(package, scratch)
        except PackageTooLarge as exc:
            check_size(replace(package, size=int(exc.args[0])))
        except PackageChanged:
            pass  # it changed while being measured: the upload's own check says so
        return scratch.tell()
