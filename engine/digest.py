"""SHA-256 for the keys runq derives on every command (index paths, the
watcher's socket, the compiled-SQL cache), without `import hashlib`: that
loads OpenSSL, which costs a small command about 2 ms. CPython's own
SHA-256 module gives the same digests; hashlib's is used where it is missing.
"""

try:
    from _sha256 import sha256 as _sha256  # CPython 3.11
except ImportError:
    try:
        from _sha2 import sha256 as _sha256  # CPython 3.12 and later
    except ImportError:
        from hashlib import sha256 as _sha256


def sha256(data=b""):
    """A hashlib-style SHA-256 object (update, hexdigest)."""
    return _sha256(data)
