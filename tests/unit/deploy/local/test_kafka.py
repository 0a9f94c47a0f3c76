from __future__ import annotations

import base64
import uuid

import pytest

from deploy.local.kafka import new_cluster_id


def test_a_cluster_id_is_a_uuid_in_url_safe_base64() -> None:
    cluster_id = new_cluster_id()

    assert len(cluster_id) == 22
    assert uuid.UUID(bytes=base64.urlsafe_b64decode(cluster_id + "=="))


def test_a_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    # 0xF8 in the first byte encodes as "-" in URL-safe base64: the storage tool would read
    # such an id as an option and refuse to format.
    dash_first = uuid.UUID(bytes=b"\xf8" + bytes(15))
    plain = uuid.UUID(bytes=b"\x10" + bytes(15))
    candidates = iter([dash_first, plain])
    monkeypatch.setattr(uuid, "uuid4", lambda: next(candidates))

    assert base64.urlsafe_b64encode(dash_first.bytes).startswith(b"-")
    assert new_cluster_id() == base64.urlsafe_b64encode(plain.bytes).decode().rstrip("=")
