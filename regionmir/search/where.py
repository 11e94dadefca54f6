"""The ``--where`` language of a search: payload conditions, parsed, described and checked.

``key=value`` matches a keyword payload field; a numeric one (``ctr``, whose payload index is a
float index: ``store.base.PAYLOAD_INDEXES``) also takes ``<``, ``<=``, ``>``, ``>=``. Conditions on
different keys all hold; values of one keyword key are alternatives; bounds on one numeric key all
hold (``ctr>0.45`` and ``ctr<=0.6``: one range).
"""

from __future__ import annotations

import math
from collections import defaultdict

from regionmir.errors import RegionMIRError, UsageError
from regionmir.store.base import NUMERIC_FIELDS, Range

WHERE_KEYS = ("view", "modality", "findings", "study_id", "patient", "box_source", "image_id", "ctr")
RANGE_KEYS = tuple(k for k in WHERE_KEYS if k in NUMERIC_FIELDS)  # take <, <=, >, >= (float payload indexes)


class WhereError(UsageError):
    """A ``--where`` condition that is wrong on its face (the CLI shows it as a usage error)."""

    def __init__(self, reason: str):
        super().__init__(reason, "--where", f"--where {reason}")


_OPERATORS = (">=", "<=", ">", "<", "=")  # two-character ones first
_RANGE_OF = {">": "gt", ">=": "gte", "<": "lt", "<=": "lte"}


def parse_where(items: list[str] | tuple[str, ...]) -> dict[str, str | list[str] | Range]:
    """``--where`` items -> filter conditions, all of which must hold (AND across keys).

    ``key=value`` matches a keyword field exactly; repeating a key matches any of its values
    (``["view=PA", "findings=nodule", "view=AP"]`` -> ``{"view": ["PA", "AP"], "findings":
    "nodule"}``). A numeric field (:data:`RANGE_KEYS`: ``ctr``) takes comparisons, ANDed into one
    :class:`~regionmir.store.Range`: ``["ctr>0.45", "ctr<=0.6"]`` -> ``{"ctr": Range(gt=0.45,
    lte=0.6)}``; ``ctr=0.5`` is ``Range(gte=0.5, lte=0.5)``. A key ends at the first of ``< > =``.

    Raises:
        WhereError: no operator, an empty key or value, a key that is not searchable, a
            comparison on a keyword field, or a bound that is not a finite number.
    """
    out: dict[str, list[str]] = defaultdict(list)
    ranges: dict[str, Range] = {}
    for item in items:
        key, op, value = _split(item)
        if key not in WHERE_KEYS:
            raise WhereError(f"key {key!r} is not searchable; use one of: {', '.join(WHERE_KEYS)}")
        if key in RANGE_KEYS:
            bound = _number(item, value)
            new = Range(gte=bound, lte=bound) if op == "=" else Range(**{_RANGE_OF[op]: bound})
            ranges[key] = ranges[key] & new if key in ranges else new
        elif op != "=":
            raise WhereError(f"{item!r}: only numeric fields ({', '.join(RANGE_KEYS)}) take <, <=, >, >=; "
                             f"{key} takes {key}=VALUE")
        else:
            out[key].append(value)
    return {**{k: v[0] if len(v) == 1 else v for k, v in out.items()}, **ranges}


def _split(item: str) -> tuple[str, str, str]:
    """``"ctr>=0.5"`` -> ``("ctr", ">=", "0.5")``: the key ends at the first ``<``, ``>`` or ``=``."""
    at = min((i for i in (item.find(c) for c in "<>=") if i >= 0), default=-1)
    op = next((o for o in _OPERATORS if at >= 0 and item.startswith(o, at)), "")
    key, value = item[:at].strip() if op else "", item[at + len(op):].strip() if op else ""
    if not key or not value:
        raise WhereError(f"takes key=value (view=PA) or a comparison on {', '.join(RANGE_KEYS)} "
                         f"(quoted for the shell: --where 'ctr>0.5'), got {item!r}")
    return key, op, value


def _number(item: str, text: str) -> float:
    """The finite number a comparison bounds by, or a :class:`WhereError` naming the item."""
    try:
        bound = float(text)
    except ValueError:
        bound = float("nan")
    if not math.isfinite(bound):
        raise WhereError(f"{item!r}: {text!r} is not a number; give one such as 'ctr>0.5'")
    return bound


def describe_condition(key: str, value) -> str:
    """A condition as ``--where`` writes it: ``view=PA,AP`` or ``ctr>0.5 ctr<=0.6``."""
    if isinstance(value, Range):
        return value.describe(key)
    return f"{key}={', '.join(value) if isinstance(value, list) else value}"


FEW_VALUED_KEYS = ("view", "modality", "findings", "box_source")  # --where keys worth listing


def check_where(store, collection: str, conditions: dict) -> None:
    """Refuse a ``--where`` condition that matches no point of ``collection``, naming known values.

    Raises:
        RegionMIRError: a condition matches nothing (the message lists the values there are,
            for the keys with few values, or says that the collection holds no such number).
    """
    from regionmir.store import Filter

    for key, value in conditions.items():
        if store.count(collection, Filter(must={key: value})):
            continue
        raise RegionMIRError(
            f"--where {describe_condition(key, value)} matches no region of collection {collection!r}; "
            f"{_where_hint(store, collection, key)}."
        )


def _where_hint(store, collection: str, key: str) -> str:
    """What to try instead, for :func:`check_where`: known values, or where to find them."""
    if key in FEW_VALUED_KEYS:
        known = sorted(store.facet(collection, key))
        return f"values of {key} there: {', '.join(known) or 'none'}"
    if key in RANGE_KEYS:
        span = store.value_range(collection, key)
        if span is None:  # no point holds a number there (or no index: made before the field was)
            return (f"it holds no {key} values: it was filled before RegionMIR stored the cardiothoracic "
                    f"ratio, or its films lack heart and lung boxes. Ingest the archive again into a new "
                    f"collection (`regionmir ingest ARCHIVE --collection NEW`) and search that")
        return f"{key} values there: {span[0]:g} to {span[1]:g}"
    if key == "patient":  # never shown in results: a pseudonym is not for reading off
        return ("patient matches the stored pseudonym (pt- and 16 hex digits, made from the PatientID "
                "with REGIONMIR_SALT), not a PatientID or name; to leave the query's own patient out, "
                "use --exclude-same-patient")
    return f"check the {key} (the results of `regionmir search --json` show stored values)"
