"""INSi in batch: thousands of identities from a CSV file, each answered once, resumable.

Input (UTF-8 CSV with a header line; extra columns are ignored): ``nom`` birth name, ``prenoms``
first names separated by spaces, ``sexe`` ``M``/``F``, ``naissance`` ``YYYY-MM-DD``, ``lieu``
INSEE COG code (optional, may be empty), ``id`` the caller's own reference (optional, copied).
A row with a Vitale card's data is searched with ``rechercherInsAvecCarteVitale`` instead: it
fills ``nir`` (the beneficiary's NIR, ``MatriculeIndividu``) and/or ``nir_ouvrant`` (the NIR of
the insured person opening the rights, ``MatriculeOD``), 13 characters or 15 with the key, with
``naissance`` and optionally ``nom`` and ``rang`` (``RangNaissance``); both kinds of rows may
share one file.

Output (UTF-8 CSV, :data:`OUTPUT_COLUMNS`): one row per input row, in the order the answers come:
``row`` the input row number (1 = first line after the header), ``key`` the row's content key
(see :func:`row_key`), ``id``, ``status`` (``ok`` the
service answered a RESULTAT, ``invalid`` refused before sending, ``fault`` the service answered
a fault), ``cr`` and ``label`` (``CodeCR``, ``LibelleCR``), ``ins`` (15 characters) and ``oid``
for CR 00, ``qualifiable`` (``yes``/``no``), ``calls`` (searches sent for the row),
``error_code`` (the ``siram:Erreur`` code, the subcode, or ``validation``) and ``error``.

Answered rows are appended in groups (group commit: a write and an fsync per row would cost
more than the row's search): written and fsynced together by the first answer that comes
``commit_interval`` seconds or more after the last commit, and at the end of the run, even an
interrupted one. A killed process or a crashed machine loses at most the answers since the last
commit, and since a search is a read, the next run simply sends those rows again.

A new run on the same OUTPUT skips the rows it already holds, recognised by their content key,
not their place: a reordered or edited input sends exactly the rows not answered yet (a torn
last line is dropped first). A row whose call failed on the way (TLS, connection, timeout) is
not written: the run reports the reason and the next run sends it again; after
``max_transport_failures`` such failures in a row the run stops sending, since the service is
not answering.

A temporary refusal (HTTP 429 or 503, RFC 6585 §4 and RFC 9110 §15.6.4; the INSi fault
``siram_40`` and the codes ``insi_102`` "service temporairement inaccessible" and ``insi_111``
"indisponibilité des téléservices", seen in answers of the live service and its test suites)
fails no row: the rate is halved (down to one call per ``backoff.max_backoff`` seconds, then
regained step by step as answers come), and the row is
sent again after a backoff with full jitter, up to ``backoff.attempts`` sends in all
(:data:`BATCH_BACKOFF`); a row still refused after that is left for the next run. The channel's
own retries of a read on HTTP 429/503 happen inside each send, so a row is sent at most
``backoff.attempts × CallOptions.retry.attempts`` times: both bounded, never more. Permanent
faults are written with their code.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from transport.errors import SoapFault, TransportError, UsageError, ValidationError
from transport.soap.channel import RETRY_STATUSES, RetryPolicy
from transport.teleservices.insi import (
    SearchOutcome,
    TraitsSearch,
    VitaleSearch,
    traits_query,
    vitale_query,
)

INPUT_COLUMNS = ("nom", "prenoms", "sexe", "naissance")
"""The input columns of a search by traits (``lieu`` and ``id`` are optional)."""
VITALE_COLUMNS = ("nir", "nir_ouvrant", "rang")
"""The input columns of a Vitale card's data (a row filling ``nir`` or ``nir_ouvrant`` is a
Vitale row)."""
TEMPORARY_CODES = frozenset({"siram_40", "insi_102", "insi_111"})
"""The INSi fault codes (subcode or ``siram:Erreur`` code) of a temporary unavailability."""
OUTPUT_COLUMNS = (
    "row",
    "key",
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

Query = TraitsSearch | VitaleSearch
Search = Callable[[Query], SearchOutcome]


@dataclass(frozen=True)
class Summary:
    """The counts of one run: input rows, rows answered before it, answered by it, and rows
    left unanswered by a transport failure or a service still busy (to be sent by the next
    run); ``transport_error`` the last transport failure's message (None: none), ``stopped``
    whether the run stopped sending after too many of them in a row.

    ``by_cr``: rows answered by this run per ``CodeCR``; ``by_error``: rows written with an
    error per ``error_code``; ``temporary_refusals``: temporary refusals met (each slowed the
    run down); ``seconds``: the run's duration; ``rate``: rows answered per second.
    """

    total: int
    skipped: int
    answered: int
    unanswered: int
    transport_error: str | None = None
    stopped: bool = False
    by_cr: Mapping[str, int] = field(default_factory=dict)
    by_error: Mapping[str, int] = field(default_factory=dict)
    temporary_refusals: int = 0
    seconds: float = 0.0
    rate: float = 0.0


class RateLimiter:
    """At most ``rate`` calls per second across threads (None: no limit), evenly spaced;
    :meth:`slow_down` and :meth:`speed_up` adapt it to a busy service."""

    FIRST_SLOWDOWN = 0.05
    """The interval, in seconds, an unlimited run slows down to on its first refusal."""

    def __init__(self, rate: float | None, *, slowest: float = 10.0) -> None:
        if rate is not None and rate <= 0:
            raise UsageError(f"the rate must be positive, not {rate}")
        self._interval = 1.0 / rate if rate else 0.0
        self._base = self._interval
        self.slowest = max(slowest, self._interval)
        """The longest interval between calls a slowed-down run reaches, in seconds."""
        self._next = time.monotonic()
        self._lock = threading.Lock()

    @property
    def interval(self) -> float:
        """The current interval between calls, in seconds (0: no limit)."""
        return self._interval

    def slow_down(self) -> None:
        """Halve the rate (the service refused for now)."""
        with self._lock:
            doubled = max(self._interval * 2, self.FIRST_SLOWDOWN)
            self._interval = min(doubled, self.slowest)

    def speed_up(self) -> None:
        """Regain a tenth of the rate lost, back to the configured one (an answer came)."""
        if self._interval <= self._base:
            return  # not slowed down (checked again under the lock): the common case
        with self._lock:
            if self._interval > self._base:
                regained = self._interval * 0.9
                self._interval = regained if regained - self._base > 1e-3 else self._base

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
    key: str = ""


def row_key(digest: str, occurrence: int) -> str:
    """The content key of an input row: its :func:`content_digest`, then ``-N`` for the Nth
    identical row, so that a resumed run recognises a row wherever it moved to, and two
    identical rows stay two rows."""
    return f"{digest}-{occurrence}"


def content_digest(fields: Mapping[str, str]) -> str:
    """A SHA-256 of an input row's searched columns and ``id`` (16 hex digits). The Vitale
    columns count only when filled, so that the keys of trait rows written before they existed
    still hold."""
    values = [fields.get(name, "").strip() for name in _KEY_COLUMNS]
    vitale = [fields.get(name, "").strip() for name in VITALE_COLUMNS]
    if any(vitale):
        values.extend(vitale)
    return hashlib.sha256("\x1f".join(values).encode("utf-8")).hexdigest()[:16]


_KEY_COLUMNS = (*INPUT_COLUMNS, "lieu", "id")


def read_rows(path: Path) -> list[_Row]:
    """The input rows; UsageError when the file is unreadable or lacks a required column."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            header = [str(name) for name in next(reader, ())]
            _check_header(path, set(header))
            rows = []
            seen: dict[str, int] = {}
            for line in reader:
                if not line:
                    continue  # a blank line is no row (as csv.DictReader reads them)
                # Missing trailing values read as "" (fields.get), extra ones are dropped.
                fields = dict(zip(header, line, strict=False))
                base = content_digest(fields)
                occurrence = seen[base] = seen.get(base, -1) + 1
                key = row_key(base, occurrence)
                rows.append(_Row(len(rows) + 1, fields.get("id", "").strip(), fields, key))
            return rows
    except IsADirectoryError:
        raise UsageError(f"{path}: is a folder", hint="name the input CSV file") from None
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UsageError(f"cannot read {path}: {error}") from None


def _check_header(path: Path, header: set[str]) -> None:
    missing = [name for name in INPUT_COLUMNS if name not in header]
    if missing and not ("naissance" in header and header & {"nir", "nir_ouvrant"}):
        raise UsageError(
            f"{path}: missing column(s) {', '.join(missing)}",
            hint=f"the header needs {', '.join(INPUT_COLUMNS)} (lieu and id optional),"
            " or naissance and nir or nir_ouvrant for Vitale card rows",
        )


def count_rows(path: Path) -> int:
    """How many rows the input holds (UsageError as :func:`read_rows`)."""
    return len(read_rows(path))


def answered_rows(path: Path) -> set[str]:
    """The content keys OUTPUT already holds, after dropping a torn last line; UsageError
    when OUTPUT is not an output of this format (another file, or an older layout)."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    try:
        text = complete.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not an INSi batch output (not UTF-8)") from None
    reader = csv.DictReader(io.StringIO(text))
    if text and tuple(reader.fieldnames or ()) != OUTPUT_COLUMNS:
        raise UsageError(
            f"{path}: not an INSi batch output of this version (its header differs)",
            hint="name a new --out file",
        )
    if len(complete) != len(data):
        with path.open("r+b") as handle:
            handle.truncate(len(complete))
    return {row["key"] for row in reader if row.get("key")}


COMMIT_INTERVAL = 1.0
"""The time, in seconds, after which an answer commits the output's rows (see :class:`_Output`)."""


class _Output:
    """Appends rows to OUTPUT; its caller serialises the calls (the run's lock).

    Rows are buffered, then written and fsynced together (committed) by the first row that
    comes ``interval`` seconds or more after the last commit, and at close (group commit: a
    write and an fsync per row would cost more CPU than the row's search). A killed process or
    a crashed machine may thus lose the rows since the last commit, or tear the last line:
    :func:`answered_rows` drops a torn line, and a search being a read, the next run simply
    sends the lost rows again. Rows count as answered, in the run's :class:`Summary`, once
    :meth:`close` has fsynced them all.
    """

    def __init__(self, path: Path, interval: float = COMMIT_INTERVAL) -> None:
        new = not path.exists() or path.stat().st_size == 0
        self._handle = path.open("a", encoding="utf-8", newline="")
        self._writer = csv.writer(self._handle, lineterminator="\n")
        self._interval = interval
        self._synced = time.monotonic()
        if new:
            self.write(OUTPUT_COLUMNS)

    def write(self, values: Sequence[str]) -> None:
        """Append one row (a value per :data:`OUTPUT_COLUMNS`), committing when it is time."""
        self._writer.writerow(values)
        now = time.monotonic()
        if now - self._synced >= self._interval:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._synced = now

    def close(self) -> None:
        """Fsync what is not yet, and close."""
        try:
            self._handle.flush()
            os.fsync(self._handle.fileno())
        finally:
            self._handle.close()


def _one_line(text: str) -> str:
    return " ".join(text.split())


def outcome_row(outcome: SearchOutcome) -> dict[str, str]:
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


def temporary(error: Exception) -> bool:
    """Whether ``error`` is the service refusing for now (see the module's docstring)."""
    if isinstance(error, SoapFault):
        return bool({error.subcode, error.service_code} & TEMPORARY_CODES)
    return isinstance(error, TransportError) and error.status in RETRY_STATUSES


BATCH_BACKOFF = RetryPolicy(attempts=9, backoff=0.5, max_backoff=30.0)
"""How the batch sends a row the service refused for now: at most ``attempts`` sends in all,
after full-jitter delays (:class:`transport.soap.channel.RetryPolicy`, the channel's own)."""


class _Busy(Exception):
    """A row the service kept refusing for now: left for the next run."""


def run_batch(
    input_path: Path,
    output_path: Path,
    search: Search,
    *,
    concurrency: int = 4,
    rate: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    max_transport_failures: int = 5,
    backoff: RetryPolicy = BATCH_BACKOFF,
    commit_interval: float = COMMIT_INTERVAL,
) -> Summary:
    """Search every input row not yet in OUTPUT with ``search`` (usually
    :meth:`~transport.teleservices.insi.InsiClient.search_outcome`), at most ``concurrency`` at
    once and ``rate`` rows per second, appending each answer to OUTPUT as it comes (committed
    in groups, ``commit_interval`` seconds or more apart, and before the summary is returned).

    ``concurrency`` threads each take the next row, send it and write its answer (one run
    calls ``search`` from the calling thread). ``progress(done, total)`` is called after each
    row. After ``max_transport_failures`` transport failures in a row, no new row is sent (the
    rows left count as unanswered). A temporary refusal slows the run down and the row is sent
    again (``backoff``). An exception other than a fault, a validation or a transport error
    stops the run once the calls in flight are answered (rows answered so far are kept).
    """
    if concurrency < 1:
        raise UsageError(f"the concurrency must be at least 1, not {concurrency}")
    if max_transport_failures < 1:
        raise UsageError(f"the failures allowed must be at least 1, not {max_transport_failures}")
    started = time.monotonic()
    rows = read_rows(input_path)
    done_before = answered_rows(output_path)
    pending = [row for row in rows if row.key not in done_before]
    # Slowed down at most to the longest backoff: a run never waits longer between calls.
    limiter = RateLimiter(rate, slowest=backoff.max_backoff)
    sender = _Sender(search, limiter, backoff)
    output = _Output(output_path, commit_interval)
    run = _Run(len(rows), len(pending), output, sender, progress, max_transport_failures)
    try:
        to_send = run.validate(pending)
        _work(run, to_send, min(concurrency, max(1, len(to_send))))
    finally:
        output.close()
    seconds = time.monotonic() - started
    return Summary(
        len(rows),
        len(rows) - len(pending),
        run.answered,
        run.unanswered,
        run.last_failure,
        run.failures >= max_transport_failures,
        dict(sorted(run.by_cr.items())),
        dict(sorted(run.by_error.items())),
        sender.refusals,
        round(seconds, 3),
        round(run.answered / seconds, 3) if seconds > 0 else 0.0,
    )


def _work(run: _Run, to_send: list[tuple[_Row, Query]], workers: int) -> None:
    """Send ``to_send`` in the calling thread (one worker) or in ``workers`` threads; on Ctrl-C
    or a worker's unexpected error, no new row is taken and the calls in flight are let finish."""
    rows = iter(to_send)
    if workers == 1:
        run.work(rows)
        return
    threads: list[threading.Thread] = []
    try:
        for number in range(workers):
            thread = threading.Thread(
                target=run.work_or_stop, args=(rows,), name=f"insi-batch-{number}"
            )
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join()
    finally:
        run.stopping = True
        for thread in threads:
            thread.join()
    if run.error is not None:
        raise run.error


_Result = dict[str, str] | str | None
"""What a row's search gave: its output values, a transport failure's message (the row is left
for the next run, counted as a failure), or None (left for the next run, not a failure)."""


class _Sender:
    """One row's search, with the rate limit and the backoff of temporary refusals."""

    def __init__(
        self,
        search: Search,
        limiter: RateLimiter,
        backoff: RetryPolicy,
    ) -> None:
        self._search = search
        self._limiter = limiter
        self._backoff = backoff
        self._lock = threading.Lock()
        self.refusals = 0
        """The temporary refusals met, counted from every worker."""

    def __call__(self, query: Query) -> _Result:
        """The row's output values, or why it is left for the next run."""
        try:
            return outcome_row(self._attempt(query))
        except _Busy:
            return None  # still refused for now: the next run sends it
        except SoapFault as fault:
            return _error_row("fault", fault.service_code or fault.subcode or fault.code, fault)
        except (TransportError, OSError) as error:  # requests' errors are OSErrors too
            return _one_line(str(error)) or type(error).__name__

    def _attempt(self, query: Query) -> SearchOutcome:
        """``search(query)``, sent again after a backoff while the service refuses for now."""
        backoff, limiter = self._backoff, self._limiter
        for sent in range(1, max(1, backoff.attempts) + 1):
            limiter.acquire()
            try:
                outcome = self._search(query)
            except (SoapFault, TransportError) as error:
                if not temporary(error):
                    raise
                with self._lock:
                    self.refusals += 1
                limiter.slow_down()
                if sent >= backoff.attempts:
                    raise _Busy(_one_line(str(error))) from None
                time.sleep(backoff.delay(sent))
                continue
            limiter.speed_up()
            return outcome
        raise _Busy("no attempt allowed")


class _Run:
    """One run's shared state under one lock: the counts and the output. Each worker takes
    the next row of one shared iterator, sends it unlocked, and writes its answer: no queue, no
    future and no handoff between threads per row."""

    def __init__(
        self,
        total: int,
        pending: int,
        output: _Output,
        send: Callable[[Query], _Result],
        progress: Callable[[int, int], None] | None,
        max_failures: int,
    ) -> None:
        self._lock = threading.Lock()
        self._output = output
        self._send = send
        self._progress = progress
        self._max_failures = max_failures
        self.total = total
        self.done = total - pending
        self.answered = 0
        self.unanswered = 0
        self.failures = 0  # the transport failures since the last answer
        self.last_failure: str | None = None
        self.by_cr: Counter[str] = Counter()
        self.by_error: Counter[str] = Counter()
        self.stopping = False  # Ctrl-C or an unexpected error: no new row is taken
        self.error: BaseException | None = None

    def validate(self, rows: list[_Row]) -> list[tuple[_Row, Query]]:
        """The rows to send with their queries; an invalid row is answered at once, without a
        call. All rows are validated before the first call: in one tight loop, not between
        calls that leave the processor's caches cold."""
        to_send = []
        for row in rows:
            try:
                to_send.append((row, row_query(row.fields)))
            except ValidationError as error:
                self._finish(row, _error_row("invalid", "validation", error))
        return to_send

    def work(self, rows: Iterator[tuple[_Row, Query]]) -> None:
        """Send ``rows`` (shared with the other workers) until none is left or the run stops."""
        while (taken := self._take(rows)) is not None:
            row, query = taken
            result = self._send(query)
            with self._lock:
                self._finish(row, result)

    def work_or_stop(self, rows: Iterator[tuple[_Row, Query]]) -> None:
        """:meth:`work` in a thread of its own: an unexpected error stops the run and is kept
        for the caller."""
        try:
            self.work(rows)
        except BaseException as error:
            with self._lock:
                self.stopping = True
                self.error = self.error or error

    def _take(self, rows: Iterator[tuple[_Row, Query]]) -> tuple[_Row, Query] | None:
        """The next row to send; once the service is deemed down, the rows met on the way are
        left for the next run."""
        with self._lock:
            for row, query in rows:
                if self.stopping:
                    return None
                if self.failures < self._max_failures:
                    return row, query
                self._finish(row, None)  # the service is not answering: for the next run
            return None

    def _finish(self, row: _Row, result: _Result) -> None:
        if result is None:
            self.unanswered += 1
        elif isinstance(result, str):
            self.unanswered += 1
            self.failures += 1
            self.last_failure = result
        else:
            get = result.get
            self._output.write(
                [str(row.number), row.key, row.reference, *(get(name, "") for name in _VALUES)]
            )
            self.answered += 1
            if cr := get("cr"):
                self.by_cr[cr] += 1
            if error_code := get("error_code"):
                self.by_error[error_code] += 1
            if result["status"] != "invalid":
                self.failures = 0  # the service answered: it is reachable again
        self.done += 1
        if self._progress is not None:
            self._progress(self.done, self.total)


_VALUES = OUTPUT_COLUMNS[3:]  # after row, key and id: the values a search gives


def row_query(fields: Mapping[str, str]) -> Query:
    """The validated search of one input row: a Vitale card's data when ``nir`` or
    ``nir_ouvrant`` is filled, else the traits; ValidationError naming the first field the
    service would refuse."""
    individual = fields.get("nir", "").strip() or None
    holder = fields.get("nir_ouvrant", "").strip() or None
    if individual or holder:
        return vitale_query(
            fields.get("naissance", ""),
            individual=individual,
            holder=holder,
            birth_name=fields.get("nom", "").strip() or None,
            rank=fields.get("rang", "").strip() or None,
        )
    return traits_query(
        fields.get("nom", ""),
        fields.get("prenoms", ""),
        fields.get("sexe", ""),
        fields.get("naissance", ""),
        fields.get("lieu", "").strip() or None,
    )
