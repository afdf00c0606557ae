"""Decode the Kubernetes protobuf bodies kubectl's typed commands send (`kubectl create namespace|configmap|
secret|serviceaccount`), for the few core kinds that matter here. Field numbers follow the types'
generated.proto files; unknown kinds raise KeyError (the server answers 415).
"""

from __future__ import annotations

import base64
from datetime import datetime, timezone
from typing import Any

MAGIC = b"k8s\x00"


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def _fields(buf: bytes):
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            n, i = _varint(buf, i)
            value, i = buf[i : i + n], i + n
        elif wire == 1:
            value, i = buf[i : i + 8], i + 8
        elif wire == 5:
            value, i = buf[i : i + 4], i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield num, value


def _time(buf: bytes) -> str:
    f = dict(_fields(buf))
    return datetime.fromtimestamp(f.get(1, 0), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _scalar(kind: str, value: Any) -> Any:
    if kind == "str":
        return value.decode()
    if kind == "b64":
        return base64.b64encode(value).decode()
    if kind == "int":
        return value - (1 << 64) if value >= 1 << 63 else value
    if kind == "bool":
        return bool(value)
    if kind == "time":
        return _time(value)
    return _message(kind, value)


_OWNER_REF = {1: ("kind", "str"), 3: ("name", "str"), 4: ("uid", "str"), 5: ("apiVersion", "str"),
              6: ("controller", "bool"), 7: ("blockOwnerDeletion", "bool")}  # fmt: skip
_OBJECT_META = {
    1: ("name", "str"), 2: ("generateName", "str"), 3: ("namespace", "str"), 5: ("uid", "str"),
    6: ("resourceVersion", "str"), 7: ("generation", "int"), 8: ("creationTimestamp", "time"),
    11: ("labels", ("map", "str")), 12: ("annotations", ("map", "str")),
    13: ("ownerReferences", ("rep", _OWNER_REF)), 14: ("finalizers", ("rep", "str")),
}  # fmt: skip
_LOCAL_REF = {1: ("name", "str")}
SCHEMAS: dict[str, dict] = {
    "Namespace": {1: ("metadata", _OBJECT_META), 2: ("spec", {1: ("finalizers", ("rep", "str"))})},
    "ConfigMap": {1: ("metadata", _OBJECT_META), 2: ("data", ("map", "str")), 3: ("binaryData", ("map", "b64")),
                  4: ("immutable", "bool")},
    "Secret": {1: ("metadata", _OBJECT_META), 2: ("data", ("map", "b64")), 3: ("type", "str"),
               4: ("stringData", ("map", "str")), 5: ("immutable", "bool")},
    "ServiceAccount": {1: ("metadata", _OBJECT_META), 3: ("imagePullSecrets", ("rep", _LOCAL_REF)),
                       4: ("automountServiceAccountToken", "bool")},
}  # fmt: skip


def _message(schema: dict, buf: bytes) -> dict:
    out: dict[str, Any] = {}
    for num, value in _fields(buf):
        if num not in schema:
            continue
        name, kind = schema[num]
        if isinstance(kind, tuple) and kind[0] == "map":
            entry = dict(_fields(value))
            out.setdefault(name, {})[entry.get(1, b"").decode()] = _scalar(kind[1], entry.get(2, b""))
        elif isinstance(kind, tuple) and kind[0] == "rep":
            out.setdefault(name, []).append(_scalar(kind[1], value))
        else:
            v = _scalar(kind, value)
            if kind in ("str", "int", "time") and v in ("", 0, "1970-01-01T00:00:00Z"):
                continue  # Go's omitempty: what JSON would not carry
            out[name] = v
    return out


def decode(body: bytes) -> dict:
    """A `k8s\\0`-prefixed runtime.Unknown envelope -> the object as JSON would carry it."""
    if not body.startswith(MAGIC):
        raise ValueError("not a Kubernetes protobuf body")
    envelope = dict(_fields(body[len(MAGIC) :]))
    type_meta = dict(_fields(envelope.get(1, b"")))
    api_version, kind = type_meta.get(1, b"").decode(), type_meta.get(2, b"").decode()
    if kind not in SCHEMAS:
        raise KeyError(kind)
    obj = _message(SCHEMAS[kind], envelope.get(2, b""))
    return {"apiVersion": api_version, "kind": kind, **obj}
