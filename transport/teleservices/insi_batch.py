"""INSi in batch: thousands of identities from a CSV file, each answered once, resumable.

Input (UTF-8 CSV with a header line; extra columns are ignored): ``nom`` birth name, ``prenoms``
first names separated by spaces, ``sexe`` ``M``/``F``, ``naissance`` ``YYYY-MM-DD``, ``lieu``
INSEE COG code (optional, may be empty), ``id`` the caller's own reference (optional, copied).

Output (UTF-8 CSV, :data:`OUTPUT_COLUMNS`): one row per input row, in the order the answers come:
``row`` the input row number (1 = first line after the header), ``id``, ``status`` (``ok`` the
service answered a RESULTAT, ``invalid`` refused before sending, ``fault`` the service answered
a fault), ``cr`` and ``label`` (``CodeCR``, ``LibelleCR``), ``ins`` (15 characters) and ``oid``
for CR 00, ``qualifiable`` (``yes``/``no``), ``calls`` (searches sent for the row),
``error_code`` (the ``siram:Erreur`` code, the subcode, or ``validation``) and ``error``.

Each answered row is appended, flushed and fsynced before the next is counted, so a killed run
loses at most the calls in flight. A new run on the same OUTPUT skips the rows it already holds
(a torn last line is dropped first). A row whose call failed on the way (TLS, connection,
timeout) is not written: the run reports it and the next run sends it again.
"""

from __future__ import annotations

import csv
import io
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from transport.errors import SoapFault, TransportError, UsageError, ValidationError
from transport.teleservices.insi import SearchOutcome, TraitsSearch, traits_query

INPUT_COLUMNS = ("nom", "prenoms", "sexe", "naissance")
"""The input columns every row needs (``lieu`` and ``id`` are optional)."""
OUTPUT_COLUMNS = (
    "row",
    "id",
    "status",
    "cr",
    "label",
    "ins",
    "oid",
    "qualifiable",
    "calls",
    "error_code",
    "error",
)

Search = Callable[[TraitsSearch], SearchOutcome]


@dataclass(frozen=True)
class Summary:
    """The counts of one run: input rows, rows answered before it, answered by it, and rows
    left unanswered by a transport failure (to be sent by the next run)."""

    total: int
    skipped: int
    answered: int
    unanswered: int


class RateLimiter:
    """At most ``rate`` calls per second across threads (None: no limit), evenly spaced."""

    def __init__(self, rate: float | None) -> None:
        if rate is not None and rate <= 0:
            raise UsageError(f"the rate must be positive, not {rate}")
        self._interval = 1.0 / rate if rate else 0.0
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        """Wait for this caller's slot."""
        if not self._interval:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(self._next, now)
            self._next = slot + self._interval
        if slot > now:
            time.sleep(slot - now)


@dataclass(frozen=True)
class _Row:
    number: int
    reference: str
    fields: dict[str, str]


def read_rows(path: Path) -> list[_Row]:
    """The input rows; UsageError when the file is unreadable or lacks a required column."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [name for name in INPUT_COLUMNS if name not in (reader.fieldnames or ())]
            if missing:
                raise UsageError(
                    f"{path}: missing column(s) {', '.join(missing)}",
                    hint=f"the header needs {', '.join(INPUT_COLUMNS)} (lieu and id optional)",
                )
            return [
                _Row(number, (row.get("id") or "").strip(), {k: v or "" for k, v in row.items()})
                for number, row in enumerate(reader, start=1)
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UsageError(f"cannot read {path}: {error}") from None


def answered_rows(path: Path) -> set[int]:
    """The row numbers OUTPUT already holds, after dropping a torn last line."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) != len(data):
        with path.open("r+b") as handle:
            handle.truncate(len(complete))
    reader = csv.DictReader(io.StringIO(complete.decode("utf-8")))
    return {int(row["row"]) for row in reader if (row.get("row") or "").isdigit()}


class _Output:
    """Appends rows durably (flush and fsync each), from any thread."""

    def __init__(self, path: Path) -> None:
        new = not path.exists() or path.stat().st_size == 0
        self._handle = path.open("a", encoding="utf-8", newline="")
        self._lock = threading.Lock()
        if new:
            self._append(OUTPUT_COLUMNS)

    def write(self, values: dict[str, str]) -> None:
        self._append([values.get(name, "") for name in OUTPUT_COLUMNS])

    def _append(self, values: tuple[str, ...] | list[str]) -> None:
        line = io.StringIO()
        csv.writer(line, lineterminator="\n").writerow(values)
        with self._lock:
            self._handle.write(line.getvalue())
            self._handle.flush()
            os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()


def _one_line(text: str) -> str:
    return " ".join(text.split())


def outcome_row(row: _Row, outcome: SearchOutcome) -> dict[str, str]:
    """The output values of a row the service answered."""
    active = outcome.active
    return {
        "status": "ok",
        "cr": outcome.code,
        "label": outcome.label,
        "ins": active.value if active else "",
        "oid": active.oid if active else "",
        "qualifiable": "yes" if outcome.qualifiable else "no",
        "calls": str(len(outcome.searches)),
    }


def _error_row(status: str, code: str, error: Exception) -> dict[str, str]:
    return {
        "status": status,
        "qualifiable": "no",
        "error_code": code,
        "error": _one_line(str(error)),
    }


def run_batch(
    input_path: Path,
    output_path: Path,
    search: Search,
    *,
    concurrency: int = 4,
    rate: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Summary:
    """Search every input row not yet in OUTPUT with ``search`` (usually
    :meth:`~transport.teleservices.insi.InsiClient.search_query`), at most ``concurrency`` at once
    and ``rate`` rows per second, appending each answer to OUTPUT as it comes.

    ``progress(done, total)`` is called after each row. An exception other than a fault, a
    validation or a transport error stops the run (rows answered so far are kept).
    """
    if concurrency < 1:
        raise UsageError(f"the concurrency must be at least 1, not {concurrency}")
    rows = read_rows(input_path)
    done_before = answered_rows(output_path)
    pending = [row for row in rows if row.number not in done_before]
    limiter = RateLimiter(rate)
    output = _Output(output_path)
    done, answered, unanswered = len(rows) - len(pending), 0, 0

    def finish(row: _Row, values: dict[str, str] | None) -> None:
        nonlocal done, answered, unanswered
        if values is None:
            unanswered += 1
        else:
            output.write({"row": str(row.number), "id": row.reference, **values})
            answered += 1
        done += 1
        if progress is not None:
            progress(done, len(rows))

    def task(row: _Row, query: TraitsSearch) -> dict[str, str] | None:
        limiter.acquire()
        try:
            return outcome_row(row, search(query))
        except SoapFault as fault:
            return _error_row("fault", fault.service_code or fault.subcode or fault.code, fault)
        except TransportError:
            return None

    executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="insi-batch")
    in_flight: dict[Future[dict[str, str] | None], _Row] = {}
    try:
        for row, query in _queries(pending, finish):
            in_flight[executor.submit(task, row, query)] = row
            # Bounded: thousands of rows never become thousands of queued futures.
            if len(in_flight) >= 2 * concurrency:
                _collect(in_flight, finish)
        while in_flight:
            _collect(in_flight, finish)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        output.close()
    return Summary(len(rows), len(rows) - len(pending), answered, unanswered)


def _queries(
    rows: list[_Row], finish: Callable[[_Row, dict[str, str] | None], None]
) -> Iterator[tuple[_Row, TraitsSearch]]:
    """The rows' validated queries; an invalid row is answered at once, without a call."""
    for row in rows:
        fields = row.fields
        try:
            query = traits_query(
                fields.get("nom", ""),
                fields.get("prenoms", ""),
                fields.get("sexe", ""),
                fields.get("naissance", ""),
                fields.get("lieu", "").strip() or None,
            )
        except ValidationError as error:
            finish(row, _error_row("invalid", "validation", error))
            continue
        yield row, query


def _collect(
    in_flight: dict[Future[dict[str, str] | None], _Row],
    finish: Callable[[_Row, dict[str, str] | None], None],
) -> None:
    finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
    for future in finished:
        row = in_flight.pop(future)
        finish(row, future.result())
