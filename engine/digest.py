"""SHA-256 for the keys runq derives on every command (index paths, the
watcher's socket, the compiled-SQL cache), without `import hashlib`: that
loads OpenSSL, which costs a small command about 2 ms. CPython's own
SHA-256 module gives the same digests; hashlib's is used where it is missing.
"""

try:
    from _sha256 import sha256  # CPython 3.11
except ImportError:
    try:
        from _sha2 import sha256  # CPython 3.12 and later
    except ImportError:
        from hashlib import sha256

__all__ = ["sha256"]
