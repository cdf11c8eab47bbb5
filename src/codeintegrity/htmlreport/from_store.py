"""Summarise an event store (events/store.py's schema) with SQL.

A store holds events, not reports: only files that failed raise events, so a store-based report
counts the files that failed (valid files are not recorded). All events of one verified file
share an ActivityID and one timestamp, and carry the same ECS context (``x``: status, signer,
trust, rule), so the work is done per file rather than per event:

1. one scan of ``events`` grouped by ActivityID (no body read) gives per file its time, its
   count of each event ID and the record to read the context from;
2. one body per file is read by rowid: the computer from the record's head and the tail of the
   context from ``codeintegrity.status`` on, a short JSON array decoded in SQL;
3. every figure (statuses, signers, reasons, computers, timeline, worst files) is a GROUP BY
   over those two temporary tables; Python only decodes the few grouped rows.

Events without an ActivityID (self-test 5056, audits discarded 4612) count as events, not files.
The store is opened read-only and never changed. SQL text is built only from this module's
constants (event IDs, column names); every value from the caller is a bound parameter.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ..errors import InputError
from ..events.schema import KINDS, VERIFICATION_ERRORS
from .model import (
    FAILING_ORDER,
    STATUSES,
    TIMELINE_BUCKETS,
    TOP_COMPUTERS,
    TOP_FAILING,
    TOP_REASONS,
    TOP_SIGNERS,
    ComputerRow,
    FailingFile,
    Reason,
    SignerRow,
    Summary,
    Timeline,
)

EVENT_IDS: tuple[int, ...] = tuple(sorted(KINDS))
SECURITY_FILE_EVENTS = (5038, 6281, 6410, 5057)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MMAP_BYTES = 1 << 34
# 3089 field positions (build_event writes every manifest field, in manifest order)
_D_ISSUER = 16


class ReportInputError(InputError):
    """A store or results file that cannot be read as report input."""

    reference = "report-input-error"


def _us(when: datetime) -> int:
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delta = when - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def _time(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def open_store_readonly(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise ReportInputError(f"no event store at {path}")
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10.0)
        db.execute("PRAGMA temp_store=MEMORY")
        # Read pages through a mapping rather than read() copies (a fifth less CPU per scan);
        # SQLite clamps this to its compile-time maximum.
        db.execute(f"PRAGMA mmap_size={_MMAP_BYTES}")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        columns = {row[1] for row in db.execute("PRAGMA table_info(events)")}
    except sqlite3.Error as exc:
        raise ReportInputError(f"cannot read event store {path}: {exc}") from None
    needed = {"record_id", "event_id", "time_us", "path", "activity_id", "body"}
    if version not in (0, 1, 2) or not needed <= columns:
        db.close()
        raise ReportInputError(f"{path} is not a codeintegrity event store")
    return db


def summarize_store(
    path: str | Path,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    computers: Sequence[str] = (),
    tool_version: str = "",
) -> Summary:
    store = Path(path)
    db = open_store_readonly(store)
    try:
        return _summarize(db, store, since, until, tuple(computers), tool_version)
    except sqlite3.Error as exc:
        raise ReportInputError(f"cannot read event store {store}: {exc}") from None
    finally:
        db.close()


def _summarize(
    db: sqlite3.Connection,
    store: Path,
    since: datetime | None,
    until: datetime | None,
    computers: tuple[str, ...],
    tool_version: str,
) -> Summary:
    summary = Summary(
        source=str(store),
        source_kind="store",
        tool_version=tool_version,
        generated=datetime.now(UTC),
        valid_known=False,
        reasons_kind="3089 verification error of the primary signature",
    )
    if since is not None:
        summary.filters["since"] = since.isoformat()
    if until is not None:
        summary.filters["until"] = until.isoformat()
    if computers:
        summary.filters["computer"] = ", ".join(computers)
    summary.notes.append(
        "An event store records only files that raised events: valid files are not in it, "
        "so the counts are of files that failed."
    )
    _collect(db, since, until, computers)
    _totals(db, summary)
    _timeline(db, summary)
    _groups(db, summary)
    _failing(db, summary)
    return summary


# Per-file event counts are packed 10 bits per event ID into two integers: one CASE and two
# sums per row cost half of one sum() per event ID. A verification raises at most
# Limits.max_signatures (32) 3089s and one of each other ID, far below 1023.
_PACK_BITS = 10
_PACK_PER_COLUMN = 6


def _packed_columns() -> tuple[str, str]:
    """(the packed sums for the GROUP BY, the unpacking n<ID> columns)."""
    sums, unpack = [], []
    for column in range(-(-len(EVENT_IDS) // _PACK_PER_COLUMN)):
        ids = EVENT_IDS[column * _PACK_PER_COLUMN : (column + 1) * _PACK_PER_COLUMN]
        whens = " ".join(f"WHEN {i} THEN {1 << (_PACK_BITS * slot)}" for slot, i in enumerate(ids))
        sums.append(f"sum(CASE event_id {whens} ELSE 0 END) AS p{column}")
        unpack += [
            f"((p{column} >> {_PACK_BITS * slot}) & {(1 << _PACK_BITS) - 1}) AS n{i}"
            for slot, i in enumerate(ids)
        ]
    return ", ".join(sums), ", ".join(unpack)


def _collect(
    db: sqlite3.Connection,
    since: datetime | None,
    until: datetime | None,
    computers: tuple[str, ...],
) -> None:
    """Fill the temporary table ``rg``: one row per file (per event for events without an
    ActivityID) with its event counts, time, computer and context key."""
    packed, unpack = _packed_columns()
    security = ", ".join(str(i) for i in SECURITY_FILE_EVENTS)
    where, args = ["1"], []
    if since is not None:
        where.append("time_us >= ?")
        args.append(_us(since))
    if until is not None:
        where.append("time_us <= ?")
        args.append(_us(until))
    for table in ("rf", "rg0", "rg"):
        db.execute(f"DROP TABLE IF EXISTS temp.{table}")
    db.execute(
        f"""CREATE TEMP TABLE rf AS
        SELECT coalesce(activity_id, '#' || record_id) AS a,
               max(activity_id IS NOT NULL) AS is_file,
               min(time_us) AS t,
               count(*) AS n,
               coalesce(min(CASE WHEN event_id IN ({security}) THEN record_id END),
                        min(record_id)) AS rep,
               min(CASE WHEN event_id = 3089 THEN record_id END) AS r3089,
               {packed}
        FROM events WHERE {" AND ".join(where)} GROUP BY 1""",  # noqa: S608
        args,
    )
    # The head of a body ({"id":..,"t":..,"c":..) holds the computer; the context array ends
    # the body, and from codeintegrity.status on it is short. A quote inside a JSON string is
    # escaped, so the markers cannot be forged by a file name. Bodies of another layout fall
    # back to a whole parse.
    db.execute(
        f"""CREATE TEMP TABLE rg0 AS
        SELECT rf.a, rf.is_file, rf.t, rf.n, rf.r3089, {unpack}, e.path AS path,
               CASE WHEN e.dp > 0 AND json_valid(substr(e.body, 1, e.dp - 1) || '}}')
                    THEN json_extract(substr(e.body, 1, e.dp - 1) || '}}', '$.c')
                    ELSE json_extract(e.body, '$.c') END AS computer,
               CASE WHEN e.sp > 0 THEN '[' || rtrim(substr(e.body, e.sp), '}}') END AS tl
        FROM rf JOIN (SELECT record_id, path, body, instr(body, ',"d":') AS dp,
                             instr(body, '["codeintegrity.status"') AS sp FROM events) AS e
             ON e.record_id = rf.rep"""  # noqa: S608
    )
    db.execute("DROP TABLE rf")
    # k: [status, signature exists, trusted, signature status, 7th item (the subject name
    # when there is one)]; rl: [name, id] of the rule the file was denied by, if any.
    try:
        db.execute(_KEYS_SQL.format(valid="1"))
    except sqlite3.OperationalError:  # a context that is not JSON: judge row by row
        db.execute("DROP TABLE IF EXISTS temp.rg")
        db.execute(_KEYS_SQL.format(valid="json_valid(tl)"))
    db.execute("DROP TABLE rg0")
    if computers:
        marks = ", ".join("?" * len(computers))
        sql = f"DELETE FROM rg WHERE computer NOT IN ({marks})"  # noqa: S608
        db.execute(sql, computers)


_KEYS_SQL = """CREATE TEMP TABLE rg AS
    SELECT rg0.*,
           CASE WHEN {valid}
                THEN json_extract(tl, '$[0][1]', '$[1][1]', '$[3][1]', '$[4][1]', '$[6]')
           END AS k,
           CASE WHEN {valid} AND instr(tl, '["rule.name"') > 0
                THEN json_extract('[' || substr(tl, instr(tl, '["rule.name"')),
                                  '$[0][1]', '$[1][1]') END AS rl
    FROM rg0"""


def _decode_key(k: str | None) -> tuple[str, bool | None, str, str | None]:
    """(status, trusted, signature status, subject name) from k."""
    if k is None:
        return "unknown", None, "", None
    try:
        status, exists, trusted, sig_status, seventh = json.loads(k)
    except (ValueError, TypeError):
        return "unknown", None, "", None
    subject = None
    if isinstance(seventh, list) and len(seventh) == 2:
        if seventh[0] == "file.code_signature.subject_name" and isinstance(seventh[1], str):
            subject = seventh[1]
    if exists is not True:
        return str(status), None, "malformed" if status == "malformed" else "not signed", None
    return (
        str(status),
        trusted if isinstance(trusted, bool) else None,
        str(sig_status or ""),
        subject,
    )


def _totals(db: sqlite3.Connection, summary: Summary) -> None:
    sums = ", ".join(f"sum(n{i})" for i in EVENT_IDS)
    every = " + ".join(f"n{i}" for i in EVENT_IDS)
    row = db.execute(
        f"""SELECT count(*), sum(is_file), min(t), max(t), sum(n), sum(n - ({every})),
                   sum(is_file AND n3077 > 0), sum(is_file AND n3076 > 0), {sums}
            FROM rg"""  # noqa: S608
    ).fetchone()
    summary.event_count = int(row[4] or 0)
    summary.files = int(row[1] or 0)
    if row[2] is not None:
        summary.first, summary.last = _time(row[2]), _time(row[3])
    summary.denied = int(row[6] or 0)
    summary.audit_denied = int(row[7] or 0)
    summary.event_counts = {
        event_id: int(n) for event_id, n in zip(EVENT_IDS, row[8:], strict=True) if n
    }
    if row[5]:
        summary.notes.append(f"{row[5]} event(s) with an ID this version does not know.")
    policies = db.execute(
        "SELECT DISTINCT rl FROM rg WHERE rl IS NOT NULL ORDER BY rl LIMIT 20"
    ).fetchall()
    for (text,) in policies:
        name, ident = json.loads(text)
        summary.policies.append((str(name), str(ident)))
    summary.policy_applied = bool(summary.denied or summary.audit_denied or summary.policies)


def _timeline(db: sqlite3.Connection, summary: Summary) -> None:
    if summary.first is None or summary.last is None:
        return
    start, end = _us(summary.first), _us(summary.last)
    width = max(1, -(-(end - start + 1) // TIMELINE_BUCKETS))
    ids = [i for i in EVENT_IDS if summary.event_counts.get(i)]
    if not ids:
        return
    sums = ", ".join(f"sum(n{i})" for i in ids)
    series = {i: [0] * TIMELINE_BUCKETS for i in ids}
    sql = f"SELECT (t - ?) / ? AS b, {sums} FROM rg GROUP BY b"  # noqa: S608
    rows = db.execute(sql, (start, width))
    for bucket, *values in rows:
        slot = min(int(bucket), TIMELINE_BUCKETS - 1)
        for event_id, value in zip(ids, values, strict=True):
            series[event_id][slot] += int(value or 0)
    summary.timeline = Timeline(_time(start), width / 1e6, series)


def _groups(db: sqlite3.Connection, summary: Summary) -> None:
    """Statuses, signers, reasons and computers from the few distinct (computer, context key,
    rule) groups."""
    status: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    signers: dict[tuple[str, bool | None], list[int]] = defaultdict(lambda: [0, 0, 0])
    hosts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])  # files, events, denials
    host_states: dict[str, Counter[str]] = defaultdict(Counter)
    rows = db.execute(
        """SELECT computer, k, rl, sum(is_file), min(CASE WHEN is_file THEN r3089 END), sum(n),
                  sum(is_file AND n3077 > 0), sum(is_file AND n3076 > 0)
           FROM rg GROUP BY computer, k, rl"""
    )
    for computer, k, rule, files, r3089, events, denied, audit in rows:
        files = int(files or 0)
        host = hosts[str(computer)]
        for slot, value in enumerate((files, events, denied, audit)):
            host[slot] += int(value or 0)
        if not files:
            continue  # events without a file (self-test, audits discarded)
        state, trusted, sig_status, subject = _decode_key(k)
        status[state] += files
        host_states[str(computer)][state] += files
        if sig_status and sig_status != "OK":
            reasons[f"signature: {sig_status}"] += files
        if rule is not None:
            reasons[f"policy: {json.loads(rule)[0]}"] += files
        if subject is not None:
            entry = signers[(subject, trusted)]
            entry[0] += files
            entry[1] += files if state != "valid" else 0
            if r3089 and (not entry[2] or r3089 < entry[2]):
                entry[2] = r3089  # one 3089 record of this signer, read for its issuer
    summary.by_status = {s: status.get(s, 0) for s in STATUSES if s != "valid"}
    if status.get("unknown"):
        summary.by_status["unknown"] = status["unknown"]
    summary.reasons_total = len(reasons)
    codes = {text: code for code, text in VERIFICATION_ERRORS.items()}
    summary.reasons = [
        Reason(label, files, summary=_reason_summary(label, codes))
        for label, files in reasons.most_common(TOP_REASONS)
    ]
    ranked = sorted(signers.items(), key=lambda item: (-item[1][0], item[0][0]))
    summary.signers_total = len(ranked)
    for (subject, trusted), (files, failing, r3089) in ranked[:TOP_SIGNERS]:
        issuer = _issuer(db, r3089)
        summary.signers.append(SignerRow(subject, issuer, "", trusted, files, None, failing))
    by_events = sorted(hosts.items(), key=lambda item: (-item[1][1], item[0]))
    summary.computers_total = len(by_events)
    for name, (files, events, denied, audit) in by_events[:TOP_COMPUTERS]:
        summary.computers.append(
            ComputerRow(name, files, dict(host_states[name]), events, denied, audit)
        )


def _reason_summary(label: str, codes: dict[str, int]) -> str:
    text = label.partition(": ")[2]
    if text in codes:
        return f"3089 VerificationError {codes[text]}"
    return ""


def _issuer(db: sqlite3.Connection, r3089: int | None) -> str:
    """The 3089 IssuerName of one file by this signer (read only for the listed signers)."""
    if not r3089:
        return ""
    row = db.execute(
        "SELECT json_extract(body, ?) FROM events WHERE record_id = ?",
        (f"$.d[{_D_ISSUER}]", r3089),
    ).fetchone()
    if row is None or row[0] is None:
        return ""
    issuer = json.loads(row[0])
    if isinstance(issuer, list) and len(issuer) == 2 and issuer[0] == "IssuerName":
        return str(issuer[1])
    return ""


def _failing(db: sqlite3.Connection, summary: Summary) -> None:
    ids = [i for i in EVENT_IDS if summary.event_counts.get(i)]
    cols = "".join(f", n{i}" for i in ids)
    order = " ".join(
        f"WHEN k LIKE '[\"{state}\"%' THEN {rank}" for state, rank in FAILING_ORDER.items()
    )
    rows = db.execute(
        f"""SELECT path, computer, k, rl, t{cols}
            FROM rg WHERE is_file
            ORDER BY CASE {order} ELSE 9 END, t DESC, path
            LIMIT {TOP_FAILING}"""  # noqa: S608
    )
    for path, computer, k, rule, t, *counts in rows:
        state, _trusted, sig_status, subject = _decode_key(k)
        reasons = []
        if sig_status and sig_status != "OK":
            reasons.append(f"signature: {sig_status}")
        if rule is not None:
            reasons.append(f"policy: {json.loads(rule)[0]}")
        summary.failing.append(
            FailingFile(
                path=str(path or ""),
                status=state,
                reasons=tuple(reasons),
                event_ids=tuple(i for i, n in zip(ids, counts, strict=True) if n),
                computer=computer or None,
                time=_time(t),
                signer=subject,
            )
        )
    summary.failing_total = summary.files
