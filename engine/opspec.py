"""Operation specs as Guild's --operation splits them: [PKG/][MODEL:]OP."""

import re


def split_opspec(spec):
    """(pkg, model, op) of an operation spec, as Guild's --operation splits it.

    Anything Guild cannot read as a spec gives (None, None, None), which
    matches every run.
    """
    if not spec:
        return None, None, None
    if "/" not in spec and ":" not in spec:
        return None, None, spec
    for pattern in OPSPEC_PATTERNS:
        match = re.match(pattern, spec)
        if match:
            model, op = match.groups()
            pkg, model = _split_model_pkg(model)
            return pkg, model, op
    return None, None, None


OPSPEC_PATTERNS = (
    r"([^/:]*):([^/:]+)$",
    r"([^/:]*/[^/:?]*):([^/:]+)$",
    r"([^/:]+/):?([^/:]+)$",
)


def _split_model_pkg(model):
    if model and "/" in model:
        pkg, model = model.split("/", 1)
        return pkg, model
    return None, model
