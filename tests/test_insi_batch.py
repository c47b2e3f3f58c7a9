"""INSi batch against the ``/lps`` stub over mutual TLS: hundreds of rows with bounded
concurrency, interrupted and resumed, every row answered exactly once."""

from __future__ import annotations

import csv
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.test_insi_client import make_client
from transport.errors import SoapFault, TransportError, UsageError
from transport.soap.channel import RetryPolicy
from transport.stubs.insi import TEST_PERSONS
from transport.teleservices import insi_batch
from transport.teleservices.insi import InsiClient, TraitsSearch
from transport.teleservices.insi_batch import (
    OUTPUT_COLUMNS,
    RateLimiter,
    answered_rows,
    run_batch,
    temporary,
)

ROWS = [
    ("ECETINSI", "JEAN PIERRE-ALAIN", "M", "2009-07-14", "", "00", TEST_PERSONS[0].active.value),
    ("DE VINCI", "LEONARDO", "M", "2014-02-01", "", "02", ""),
    ("DE VINCI", "LEONARDO", "M", "2014-02-01", "99127", "00", TEST_PERSONS[2].active.value),
    ("HOUILLES", "PIERRE PAUL JACQUES", "M", "1993-01-27", "", "01", ""),
    ("Nessi", "Nathalie", "F", "1977-07-14", "", "00", TEST_PERSONS[9].active.value),
    ("D'ÆION", "CŒUR", "M", "2001-01-01", "", "", ""),
]
REPEAT = 50  # 300 rows


STUB_SERVICES = ["lps"]


@pytest.fixture
def insi(pki, load, stubs, tmp_path, monkeypatch) -> Iterator[InsiClient]:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    with make_client(pki, load, stubs) as client:
        yield InsiClient(client)


def write_input(path: Path) -> list[tuple[str, ...]]:
    expected = []
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "nom", "prenoms", "sexe", "naissance", "lieu"])
        for index in range(REPEAT):
            for number, (nom, prenoms, sexe, naissance, lieu, cr, ins) in enumerate(ROWS):
                writer.writerow([f"P{index}-{number}", nom, prenoms, sexe, naissance, lieu])
                expected.append((cr, ins))
    return expected


def read_output(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == OUTPUT_COLUMNS
        return list(reader)


class Counting:
    """Counts the rows searched, and fails after ``fail_after`` of them."""

    def __init__(self, insi: InsiClient, fail_after: int | None = None) -> None:
        self.insi = insi
        self.fail_after = fail_after
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, query: TraitsSearch):
        with self._lock:
            self.calls += 1
            if self.fail_after is not None and self.calls > self.fail_after:
                raise RuntimeError("injected interruption")
        return self.insi.search_query(query)


def assert_every_row_once(rows: list[dict[str, str]], expected: list[tuple[str, ...]]) -> None:
    numbers = [int(row["row"]) for row in rows]
    assert sorted(numbers) == list(range(1, len(expected) + 1))
    for row in rows:
        cr, ins = expected[int(row["row"]) - 1]
        assert (row["cr"], row["ins"]) == (cr, ins)
        assert row["id"] == f"P{(int(row['row']) - 1) // len(ROWS)}-{(int(row['row']) - 1) % 6}"
        if cr:
            assert row["status"] == "ok" and row["qualifiable"] == ("yes" if cr == "00" else "no")
        else:
            assert (row["status"], row["error_code"]) == ("invalid", "validation")
            assert row["calls"] == ""


def test_a_few_hundred_rows_are_answered_once_each(insi, tmp_path):
    expected = write_input(tmp_path / "in.csv")
    seen = []
    summary = run_batch(
        tmp_path / "in.csv",
        tmp_path / "out.csv",
        Counting(insi),
        concurrency=4,
        rate=10_000,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert (summary.total, summary.skipped, summary.answered, summary.unanswered) == (
        300,
        0,
        300,
        0,
    )
    assert_every_row_once(read_output(tmp_path / "out.csv"), expected)
    assert seen[-1] == (300, 300) and len(seen) == 300
    by_number = {int(row["row"]): row for row in read_output(tmp_path / "out.csv")}
    assert by_number[1]["calls"] == "2"  # JEAN (CR 01), then PIERRE-ALAIN (CR 00)
    assert by_number[4]["calls"] == "4"  # three first names, then all together


def test_an_interrupted_run_resumes_without_sending_answered_rows_again(insi, tmp_path):
    expected = write_input(tmp_path / "in.csv")
    first = Counting(insi, fail_after=120)
    with pytest.raises(RuntimeError, match="injected"):
        run_batch(tmp_path / "in.csv", tmp_path / "out.csv", first, concurrency=4)
    kept = read_output(tmp_path / "out.csv")
    assert 0 < len(kept) < 300
    answered_before = {int(row["row"]) for row in kept}
    second = Counting(insi)
    summary = run_batch(tmp_path / "in.csv", tmp_path / "out.csv", second, concurrency=3)
    assert summary.skipped == len(kept) and summary.answered == 300 - len(kept)
    rows = read_output(tmp_path / "out.csv")
    assert_every_row_once(rows, expected)
    resent = {int(row["row"]) for row in rows[len(kept) :]}
    assert not resent & answered_before
    # Nothing more to do: a third run sends nothing.
    third = Counting(insi)
    assert run_batch(tmp_path / "in.csv", tmp_path / "out.csv", third).answered == 0
    assert third.calls == 0


def test_a_torn_last_line_is_dropped_and_the_row_sent_again(insi, tmp_path):
    expected = write_input(tmp_path / "in.csv")
    run_batch(tmp_path / "in.csv", tmp_path / "out.csv", insi.search_query, concurrency=2)
    data = (tmp_path / "out.csv").read_bytes()
    lines = data.splitlines(keepends=True)
    torn = b"".join(lines[:-1]) + lines[-1][:5]
    (tmp_path / "out.csv").write_bytes(torn)
    assert len(answered_rows(tmp_path / "out.csv")) == 299
    summary = run_batch(tmp_path / "in.csv", tmp_path / "out.csv", insi.search_query)
    assert summary.answered == 1
    assert_every_row_once(read_output(tmp_path / "out.csv"), expected)


def test_ctrl_c_in_a_worker_stops_the_run_once_the_calls_in_flight_are_answered(insi, tmp_path):
    expected = write_input(tmp_path / "in.csv")
    counting = Counting(insi)

    def search(query: TraitsSearch):
        if counting.calls >= 40:
            raise KeyboardInterrupt
        return counting(query)

    with pytest.raises(KeyboardInterrupt):
        run_batch(tmp_path / "in.csv", tmp_path / "out.csv", search, concurrency=4)
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("insi-")]
    kept = read_output(tmp_path / "out.csv")
    assert 0 < len(kept) < 300
    summary = run_batch(tmp_path / "in.csv", tmp_path / "out.csv", insi.search_query)
    assert (summary.skipped, summary.answered) == (len(kept), 300 - len(kept))
    assert_every_row_once(read_output(tmp_path / "out.csv"), expected)


def test_a_machine_crash_loses_only_rows_not_fsynced_and_the_next_run_sends_them(
    insi, tmp_path, monkeypatch
):
    expected = write_input(tmp_path / "in.csv")
    # Each search takes a tenth of the commit interval on the run's clock: an fsync every ten.
    clock = [0.0]
    monkeypatch.setattr(
        insi_batch, "time", SimpleNamespace(monotonic=lambda: clock[0], sleep=time.sleep)
    )
    synced: list[int] = []  # the output's size at each of the batch's fsyncs

    def fsync(descriptor: int) -> None:
        synced.append(os.fstat(descriptor).st_size)
        os.fsync(descriptor)

    monkeypatch.setattr(insi_batch, "os", SimpleNamespace(fsync=fsync))
    counting = Counting(insi, fail_after=137)

    def search(query: TraitsSearch):
        clock[0] += 0.1
        return counting(query)

    with pytest.raises(RuntimeError, match="injected"):
        run_batch(tmp_path / "in.csv", tmp_path / "out.csv", search, concurrency=1)
    written = read_output(tmp_path / "out.csv")
    # Group commit: far fewer fsyncs than rows; the last one is the run's end (its close).
    assert 1 < len(synced) < len(written) / 4
    # The machine crashed instead: what the last fsync before the end covered survives, and
    # a piece of the next line with it.
    data = (tmp_path / "out.csv").read_bytes()
    durable = synced[-2]
    (tmp_path / "out.csv").write_bytes(data[: durable + 7])
    kept = read_output(tmp_path / "out.csv")[:-1]  # the torn line reads as one more row
    lost = {row["key"] for row in written} - {row["key"] for row in kept}
    assert kept and lost
    again = Counting(insi)
    summary = run_batch(tmp_path / "in.csv", tmp_path / "out.csv", again)
    assert (summary.skipped, summary.answered) == (len(kept), 300 - len(kept))
    rows = read_output(tmp_path / "out.csv")
    assert_every_row_once(rows, expected)
    assert lost <= {row["key"] for row in rows[len(kept) :]}  # sent again
    assert synced[-1] == (tmp_path / "out.csv").stat().st_size  # a finished run is durable


def test_transport_failures_leave_rows_for_the_next_run(insi, tmp_path):
    expected = write_input(tmp_path / "in.csv")

    def unreachable(query):
        raise TransportError("cannot connect")

    summary = run_batch(tmp_path / "in.csv", tmp_path / "out.csv", unreachable)
    assert summary.unanswered == 250 and summary.answered == 50  # the invalid rows
    summary = run_batch(tmp_path / "in.csv", tmp_path / "out.csv", insi.search_query)
    assert (summary.skipped, summary.answered, summary.unanswered) == (50, 250, 0)
    assert_every_row_once(read_output(tmp_path / "out.csv"), expected)


def test_a_reordered_input_resumes_by_row_content_not_row_number(insi, tmp_path):
    expected = write_input(tmp_path / "in.csv")
    by_id = {}
    with (tmp_path / "in.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    for line, outcome in zip(body, expected, strict=True):
        by_id[line[0]] = outcome
    with pytest.raises(RuntimeError, match="injected"):
        run_batch(tmp_path / "in.csv", tmp_path / "out.csv", Counting(insi, fail_after=100))
    kept = len(read_output(tmp_path / "out.csv"))
    # The same rows, in the opposite order: each is still answered exactly once.
    with (tmp_path / "in.csv").open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([header, *reversed(body)])
    again = Counting(insi)
    summary = run_batch(tmp_path / "in.csv", tmp_path / "out.csv", again)
    assert (summary.skipped, summary.answered) == (kept, 300 - kept)
    output = read_output(tmp_path / "out.csv")
    assert sorted(row["id"] for row in output) == sorted(by_id)
    assert all((row["cr"], row["ins"]) == by_id[row["id"]] for row in output)


def test_identical_rows_are_answered_once_each(insi, tmp_path):
    (tmp_path / "in.csv").write_text(
        "nom,prenoms,sexe,naissance\n" + "NESSI,NATHALIE,F,1977-07-14\n" * 3, encoding="utf-8"
    )
    assert run_batch(tmp_path / "in.csv", tmp_path / "out.csv", insi.search_query).answered == 3
    assert run_batch(tmp_path / "in.csv", tmp_path / "out.csv", insi.search_query).answered == 0
    assert len({row["key"] for row in read_output(tmp_path / "out.csv")}) == 3


def test_a_dead_service_stops_the_run_after_a_few_failures_in_a_row(tmp_path):
    write_input(tmp_path / "in.csv")
    calls = []

    def unreachable(query):
        calls.append(query)
        raise TransportError("cannot connect to https://127.0.0.1:1/lps: connection refused")

    summary = run_batch(
        tmp_path / "in.csv",
        tmp_path / "out.csv",
        unreachable,
        concurrency=2,
        max_transport_failures=3,
    )
    assert summary.stopped and "connection refused" in (summary.transport_error or "")
    # At most the calls in flight when the third failure came in, not one per row.
    assert 3 <= len(calls) <= 3 + 2 * 2
    assert summary.unanswered == 250 and summary.answered == 50  # the invalid rows, unsent


def test_an_output_of_another_layout_is_refused(tmp_path):
    write_input(tmp_path / "in.csv")
    (tmp_path / "out.csv").write_text("row,id,status\n1,P0-0,ok\n", encoding="utf-8")
    with pytest.raises(UsageError, match="header differs"):
        run_batch(tmp_path / "in.csv", tmp_path / "out.csv", lambda query: None)
    assert (tmp_path / "out.csv").read_text(encoding="utf-8") == "row,id,status\n1,P0-0,ok\n"


def test_an_input_without_the_required_columns_is_refused(tmp_path):
    (tmp_path / "in.csv").write_text("nom,prenoms\nA,B\n", encoding="utf-8")
    with pytest.raises(UsageError, match="sexe, naissance"):
        run_batch(tmp_path / "in.csv", tmp_path / "out.csv", lambda query: None)


# --- under a real service: Vitale rows, temporary refusals, the summary ----------------------


QUICK = RetryPolicy(attempts=9, backoff=0.01, max_backoff=0.05)
"""The batch's backoff, shortened for the tests (the delays are not what is tested)."""


def assert_answered_once(rows: list[dict[str, str]], expected: list[tuple[str, str]]) -> None:
    assert sorted(int(row["row"]) for row in rows) == list(range(1, len(expected) + 1))
    for row in rows:
        assert (row["cr"], row["ins"]) == expected[int(row["row"]) - 1]


def write_mixed(path: Path) -> list[tuple[str, str]]:
    """Trait rows and Vitale card rows in one CSV; the expected (cr, ins) of each row."""
    ecetinsi, nessi = TEST_PERSONS[0], TEST_PERSONS[9]
    rows = [
        (
            {"nom": "ECETINSI", "prenoms": "PIERRE-ALAIN", "sexe": "M", "naissance": "2009-07-14"},
            ("00", ecetinsi.active.value),
        ),
        (
            {"naissance": ecetinsi.traits.birth_date, "nir": ecetinsi.active.value, "rang": "1"},
            ("00", ecetinsi.active.value),
        ),
        (
            {"nom": "HOUILLES", "prenoms": "PAUL", "sexe": "M", "naissance": "1993-01-27"},
            ("01", ""),
        ),
        (
            {"naissance": nessi.traits.birth_date, "nir_ouvrant": nessi.active.value},
            ("00", nessi.active.value),
        ),
        ({"naissance": "2009-07-14", "nir": "12345"}, ("", "")),  # refused before sending
    ]
    columns = ["id", "nom", "prenoms", "sexe", "naissance", "lieu", "nir", "nir_ouvrant", "rang"]
    expected = []
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        for index in range(8):
            for number, (fields, answer) in enumerate(rows):
                writer.writerow({"id": f"M{index}-{number}", **fields})
                expected.append(answer)
    return expected


@pytest.mark.parametrize(
    "refusals",
    [
        ("siram_40",) * 6,
        ("503",) * 12,
        ("429", "siram_40", "503", "429", "siram_40", "503") * 2,
    ],
    ids=["siram_40", "http-503", "mixed"],
)
def test_a_mixed_batch_under_temporary_refusals_answers_every_row(insi, stubs, tmp_path, refusals):
    expected = write_mixed(tmp_path / "in.csv")
    stubs.context.insi_refusals.inject(*refusals)
    before = stubs.context.insi_refusals.answered
    summary = run_batch(
        tmp_path / "in.csv", tmp_path / "out.csv", insi.search_outcome, concurrency=4, backoff=QUICK
    )
    assert stubs.context.insi_refusals.answered - before == len(refusals)  # all were met
    assert stubs.context.insi_refusals.take() is None
    rows = read_output(tmp_path / "out.csv")
    assert summary.answered == len(expected) == len(rows) and summary.unanswered == 0
    assert_answered_once(rows, expected)
    assert not any(row["status"] == "fault" for row in rows)  # no row failed for a refusal
    assert summary.temporary_refusals >= 1
    assert summary.by_cr == {"00": 24, "01": 8}
    assert summary.by_error == {"validation": 8}
    vitale = [row for row in rows if row["id"].endswith("-1")]
    assert {row["calls"] for row in vitale} == {"1"}


def test_a_service_busy_for_longer_leaves_rows_for_the_next_run(insi, stubs, tmp_path):
    expected = write_mixed(tmp_path / "in.csv")
    patient = RetryPolicy(attempts=2, backoff=0.01, max_backoff=0.01)
    stubs.context.insi_refusals.inject(*["siram_40"] * 200)
    try:
        summary = run_batch(
            tmp_path / "in.csv", tmp_path / "out.csv", insi.search_outcome, backoff=patient
        )
    finally:
        while stubs.context.insi_refusals.take() is not None:
            pass
    rows = read_output(tmp_path / "out.csv")
    assert summary.unanswered > 0 and not any(row["status"] == "fault" for row in rows)
    again = run_batch(tmp_path / "in.csv", tmp_path / "out.csv", insi.search_outcome)
    assert again.unanswered == 0
    assert_answered_once(read_output(tmp_path / "out.csv"), expected)


def test_a_permanent_fault_is_written_with_its_code(tmp_path):
    write_mixed(tmp_path / "in.csv")

    def refuse(query):
        raise SoapFault("inconnu", code="Sender", subcodes=("soap:siram_100",))

    summary = run_batch(tmp_path / "in.csv", tmp_path / "out.csv", refuse, backoff=QUICK)
    rows = read_output(tmp_path / "out.csv")
    assert summary.temporary_refusals == 0 and summary.unanswered == 0
    assert {row["error_code"] for row in rows if row["status"] == "fault"} == {"siram_100"}
    assert summary.by_error == {"siram_100": 32, "validation": 8}


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (SoapFault("x", code="Receiver", subcodes=("soap:siram_40",)), True),
        (SoapFault("x", code="Sender", subcodes=("siram:siram_100",)), False),
        (TransportError("https://h/lps answered without a SOAP envelope", status=503), True),
        (TransportError("https://h/lps answered without a SOAP envelope", status=429), True),
        (TransportError("https://h/lps answered HTTP 500 without a SOAP fault", status=500), False),
        # Only the status counts: a message that reads like a refusal, but no answer, is not one.
        (TransportError("https://h/lps answered HTTP 503 without a SOAP envelope"), False),
        (TransportError("connection refused"), False),
    ],
)
def test_what_counts_as_a_temporary_refusal(error, expected):
    assert temporary(error) is expected


def test_the_adaptive_rate_halves_and_comes_back():
    limiter = RateLimiter(100)
    limiter.slow_down()
    limiter.slow_down()
    assert limiter.interval == pytest.approx(0.05 * 2)
    for _ in range(200):
        limiter.speed_up()
    assert limiter.interval == pytest.approx(0.01)
    unlimited = RateLimiter(None)
    unlimited.slow_down()
    assert unlimited.interval == RateLimiter.FIRST_SLOWDOWN
    for _ in range(100):
        unlimited.slow_down()
    assert unlimited.interval == unlimited.slowest == 10.0
    bounded = RateLimiter(None, slowest=0.2)
    for _ in range(100):
        bounded.slow_down()
    assert bounded.interval == 0.2
