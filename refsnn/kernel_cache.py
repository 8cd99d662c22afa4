"""Numba's kernel cache, made current again whenever any refsnn file with Numba code changes.

Why: Numba's on-disk cache (``cache=True``) decides whether a cached kernel is current from a hash
of the one file the kernel is written in (``_SourceFileBackedLocatorMixin.get_source_stamp`` in
numba/core/caching.py). A kernel that calls a jitted function from another file carries that
function's compiled code inside its own cache entry, so when only the other file changes the stale
code keeps loading: numba/numba#1833 (open since 2016; PR #8396, a per-dependency fix, unmerged),
warned about in Numba's docs ("Cache invalidation fails to recognize changes in functions defined in
a different file"). refsnn hit it: a new surrogate in refsnn/surrogate.py, lif.py unchanged, and LIF
ran the old surrogate code from refsnn/neurons/__pycache__.

What: the three locators Numba uses for a function in a regular source file
(``NUMBA_CACHE_DIR``, ``__pycache__`` beside the file, the user-wide cache when the package
directory is not writable) are subclassed for functions inside a followed package (``follow``).
They use Numba's own directories, file names and source stamp, and add ``package_digest(root)``
to the stamp, so every kernel of the package compiles again after any change to its Numba code.
Importing this module follows the refsnn package; refsnn/__init__.py imports it before any module
that defines a kernel. ``NUMBA_CACHE_LOCATOR_CLASSES``, when set, replaces every locator (Numba's
and these): it is the user's explicit choice.

Which files: ``numba_sources(root)``, the ``.py`` files that import numba. Only they hold code a
kernel can reach: a jitted function can call only jitted functions, and Numba freezes the globals it
reads (refsnn's kernels read constants such as ``BLOCK`` and the surrogate codes, all defined in
those files). The other files (cli.py, train/, ...) run in Python only; hashing them too would
recompile every kernel after every edit of cli.py.
"""
import functools
import hashlib
import os
import re

from numba.core import caching

_NUMBA_IMPORT = re.compile(rb"^[ \t]*(import|from)[ \t]+numba\b", re.MULTILINE)

_roots = []  # absolute directories of the followed packages


def _python_files(root):
    """Sorted relative POSIX paths of the ``.py`` files under ``root`` (``__pycache__`` skipped)."""
    found = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [name for name in subfolders if name != "__pycache__"]
        for name in names:
            if name.endswith(".py"):
                found.append(os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/"))
    return sorted(found)


def numba_sources(root):
    """Sorted relative POSIX paths of the ``.py`` files under ``root`` that import numba (a line
    ``import numba...`` or ``from numba... import``)."""
    found = []
    for relative in _python_files(root):
        with open(os.path.join(root, relative), "rb") as f:
            if _NUMBA_IMPORT.search(f.read()):
                found.append(relative)
    return found


def package_digest(root):
    """SHA-256 (hex) over ``numba_sources(root)`` in order: for each file its relative POSIX path in
    UTF-8, a zero byte, its length in bytes as 8 little-endian bytes, its bytes. Read again only when
    a ``.py`` file's modification time or size changed (the same rule as Numba's source hash)."""
    signature = []
    for relative in _python_files(root):
        st = os.stat(os.path.join(root, relative))
        signature.append((relative, st.st_mtime_ns, st.st_size))
    return _digest(root, tuple(signature))


@functools.lru_cache(maxsize=None)
def _digest(root, signature):
    digest = hashlib.sha256()
    for relative in numba_sources(root):
        with open(os.path.join(root, relative), "rb") as f:
            data = f.read()
        digest.update(relative.encode() + b"\0" + len(data).to_bytes(8, "little") + data)
    return digest.hexdigest()


def _followed_root(py_file):
    path = os.path.abspath(py_file)
    for root in _roots:
        if os.path.commonpath([root, path]) == root:
            return root
    return None


class _FollowsPackage:
    """Mixin for Numba's source-file locators: only functions inside a followed package, and a
    stamp of (Numba's stamp, the package digest)."""

    @classmethod
    def from_function(cls, py_func, py_file):
        root = _followed_root(py_file)
        if root is None:
            return None
        self = super().from_function(py_func, py_file)
        if self is not None:
            self.package_root = root
        return self

    def get_source_stamp(self):
        return super().get_source_stamp(), package_digest(self.package_root)


class UserProvidedLocator(_FollowsPackage, caching.UserProvidedCacheLocator):
    """``NUMBA_CACHE_DIR``, when set."""


class InTreeLocator(_FollowsPackage, caching.InTreeCacheLocator):
    """``__pycache__`` beside the source file, when writable."""


class UserWideLocator(_FollowsPackage, caching.UserWideCacheLocator):
    """The user-wide cache directory (an installed, read-only package)."""


LOCATORS = (UserProvidedLocator, InTreeLocator, UserWideLocator)


def follow(root):
    """Make the cache of every kernel under the directory ``root`` depend on ``package_digest(root)``.
    Affects kernels decorated after the call (a dispatcher reads its stamp when it is made)."""
    root = os.path.abspath(root)
    if root not in _roots:
        _roots.append(root)
    if caching.CacheImpl._locator_classes[:len(LOCATORS)] != list(LOCATORS):
        caching.CacheImpl._locator_classes[:0] = LOCATORS


follow(os.path.dirname(__file__))
