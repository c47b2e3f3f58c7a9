"""Message and assertion identifiers: random version 4 UUIDs in their usual text form, never the
same twice, across threads and across a fork."""

from __future__ import annotations

import os
import threading
import uuid

from transport import ids


def test_an_identifier_is_a_version_4_uuid_as_str_writes_it() -> None:
    for _ in range(600):  # beyond one draw of operating-system randomness
        text = ids.uuid4()
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


def test_identifiers_never_repeat_within_and_across_threads() -> None:
    seen: list[list[str]] = []

    def draw() -> None:
        seen.append([ids.uuid4() for _ in range(1000)])

    threads = [threading.Thread(target=draw) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [text for drawn in seen for text in drawn] + [ids.uuid4() for _ in range(1000)]
    assert len(everything) == 5000
    assert len(set(everything)) == 5000


def test_a_forked_child_does_not_repeat_its_parent() -> None:
    ids.uuid4()  # the parent holds randomness not yet used
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read)
        os.write(write, "".join(ids.uuid4() for _ in range(10)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        from_child = pipe.read().decode()
    os.waitpid(child, 0)
    from_parent = "".join(ids.uuid4() for _ in range(10))
    child_ids = {from_child[i : i + 36] for i in range(0, len(from_child), 36)}
    parent_ids = {from_parent[i : i + 36] for i in range(0, len(from_parent), 36)}
    assert len(child_ids) == 10
    assert not child_ids & parent_ids
