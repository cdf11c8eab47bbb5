"""The verification engine: bytes in, :class:`Report` out.

``verify_bytes`` is pure apart from the trust store and catalog index it is handed;
``verify_path`` is the I/O edge that maps a file read-only and calls it; ``verify_source`` judges
a file read through a :class:`~codeintegrity.pe.source.ByteSource` (a file inside a disk image)
with bounded memory: the parsers' slices on demand, the hashing pass in chunks. Every check adds
findings; nothing stops at the first problem, and a signature that cannot be parsed makes the
file ``malformed``, never ``unsigned``.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from .errors import MalformedError, NotAPEFile
from .findings import Finding, FindingCode, Severity
from .options import VerifyOptions
from .report import (
    CatalogMatch,
    Check,
    Report,
    SignatureResult,
    Status,
    decide_status,
    signature_result,
)

if TYPE_CHECKING:
    from .authenticode.signeddata import Signature
    from .authenticode.trust import TrustStore
    from .catalog.match import PageChecker
    from .pe.certtable import CertEntry
    from .pe.hashing import HashResult, Release
    from .pe.layout import PEImage
    from .pe.pagehash import PageHashTable
    from .pe.source import ByteSource
    from .reader import DemandBuffer

__all__ = ["VerifyOptions", "verify_bytes", "verify_path", "verify_source", "Report", "Status"]

_C = FindingCode


def verify_path(
    path: str | os.PathLike[str],
    options: VerifyOptions | None = None,
    *,
    opened: Callable[[os.stat_result], None] | None = None,
) -> Report:
    """Map ``path`` read-only and judge it. Raises ``OSError`` when it cannot be read.
    ``opened`` is given the ``fstat`` of the file as opened: the identity of the bytes judged,
    whatever the path names by the time the report is used."""
    name = os.fspath(path)
    with open(name, "rb") as handle:
        st = os.fstat(handle.fileno())
        if opened is not None:
            opened(st)
        size = st.st_size
        if size == 0:
            return verify_bytes(b"", options, path=name)
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            from .pe.hashing import mmap_releaser

            view = memoryview(mapped)
            try:
                # Hashed chunks leave the resident set, so memory stays flat for large files.
                return _verify(view, options, name, mmap_releaser(mapped))
            finally:
                view.release()


def verify_bytes(
    data: bytes | bytearray | memoryview,
    options: VerifyOptions | None = None,
    *,
    path: str = "<memory>",
) -> Report:
    """Judge one PE image held in memory."""
    return _verify(data, options, path, None)


def verify_source(
    source: ByteSource, options: VerifyOptions | None = None, *, path: str = "<source>"
) -> Report:
    """Judge the file ``source`` reads, never holding it whole: the parsers read their slices
    (headers, certificate table, version resource) through a buffer filled on demand, and the
    hashing pass pulls the file chunk by chunk. The report is the one ``verify_bytes`` gives
    for the same bytes. Raises ``OSError`` when the source cannot be read (a short read too)."""
    if source.size <= 0:
        return verify_bytes(b"", options, path=path)
    from .pe import hashing
    from .pe.source import DemandImage, read_exact

    if source.size <= hashing.STREAM_CHUNK_SIZE:
        # No larger than one chunk: one read costs less than the demand blocks and chunks
        # (a read through a disk image has a fixed cost), and holds no more than a chunk.
        return verify_bytes(read_exact(source, 0, source.size), options, path=path)

    with DemandImage.over(source) as demand:
        view = memoryview(demand)
        try:
            return _verify(view, options, path, None, source, demand)
        finally:
            view.release()


def _verify(
    data: bytes | bytearray | memoryview,
    options: VerifyOptions | None,
    path: str,
    release: Release | None,
    source: ByteSource | None = None,
    demand: DemandBuffer | None = None,
) -> Report:
    opts = options or VerifyOptions()
    from .pe.layout import parse_pe

    try:
        image = parse_pe(data, opts.limits)
    except NotAPEFile as exc:
        return _not_a_pe(data if source is None else source, opts, path, exc)
    except MalformedError as exc:
        finding = Finding(_C.IMAGE_MALFORMED, exc.diagnostics(), offset=exc.offset)
        return Report(path=path, status=Status.MALFORMED, findings=(finding,), error=str(exc))
    return _Run(data, image, opts, path, release, source, demand).run()


def _not_a_pe(
    data: bytes | bytearray | memoryview | ByteSource,
    opts: VerifyOptions,
    path: str,
    exc: NotAPEFile,
) -> Report:
    """A file that is not a PE: only a catalog can vouch for it (by its flat hash)."""
    if opts.catalogs is not None:
        flat = _flat_digests(data, opts.catalogs.algorithms())
        from .catalog.match import catalog_lookup

        match, findings = catalog_lookup(flat, opts)
        if match is not None:
            status = decide_status(malformed=False, signed=True, findings=findings)
            return Report(
                path=path,
                status=status,
                findings=tuple(findings),
                flat_hash={k: v.hex() for k, v in flat.items()},
                catalog=match,
            )
    finding = Finding(_C.IMAGE_MALFORMED, str(exc))
    return Report(path=path, status=Status.MALFORMED, findings=(finding,), error=str(exc))


def _flat_digests(
    data: bytes | bytearray | memoryview | ByteSource, algorithms: Iterable[str]
) -> dict[str, bytes]:
    """Digests of every byte; a source is read chunk by chunk."""
    import hashlib

    if isinstance(data, bytes | bytearray | memoryview):
        return {alg: hashlib.new(alg, data).digest() for alg in algorithms}
    from .pe.hashing import STREAM_CHUNK_SIZE
    from .pe.source import read_exact

    hashers = {alg: hashlib.new(alg) for alg in algorithms}
    for offset in range(0, data.size, STREAM_CHUNK_SIZE):
        chunk = read_exact(data, offset, STREAM_CHUNK_SIZE)
        for hasher in hashers.values():
            hasher.update(chunk)
    return {alg: hasher.digest() for alg, hasher in hashers.items()}


@dataclass
class _Sig:
    """A parsed signature travelling through the checks (engine-internal)."""

    parsed: Signature
    page_table: PageHashTable | None = None
    page_index: int | None = None  # index of its table in the hash request


class _Run:
    """One verification: collects findings while walking the layers once."""

    def __init__(
        self,
        data: bytes | bytearray | memoryview,
        image: PEImage,
        opts: VerifyOptions,
        path: str,
        release: Release | None,
        source: ByteSource | None = None,
        demand: DemandBuffer | None = None,
    ) -> None:
        self.data = data
        self.release = release
        self.source = source  # when set, hashing reads it in chunks instead of ``data``
        self.demand = demand  # when set, ``data`` is read in on demand (verify_source)
        self.image = image
        self.opts = opts
        self.path = path
        self.findings: list[Finding] = []
        self.malformed = False

    def run(self) -> Report:
        from .pe.certtable import parse_cert_table
        from .pe.hashing import HashRequest
        from .pe.versioninfo import parse_version_info

        image = self.image
        limits = self.opts.limits
        if self.demand is not None:
            self._read_cert_table_in(self.demand)
        table = parse_cert_table(self.data, image, limits)
        self._add_table_findings(table.findings)
        if table.malformed:
            self.malformed = True
        sigs = self._parse_signatures(table.entries)
        signed_embedded = table.present and (bool(table.entries) or self.malformed)

        tables = tuple(s.page_table for s in sigs if s.page_table is not None)
        digests = {s.parsed.digest_algorithm for s in sigs}
        digests |= set(self.opts.extra_digests)
        if self.opts.catalogs is not None:
            digests |= set(self.opts.catalogs.algorithms())
        digests &= _SUPPORTED
        efi = frozenset(digests) if image.is_efi and sigs else frozenset()
        request = HashRequest(
            image=frozenset(digests),
            page_tables=tables,
            efi_spec_form=efi,
            first_page=frozenset(self.opts.first_page_digests),
            flat=frozenset(self.opts.flat_digests),
        )
        # Read before hashing: hashed pages are released from the resident set as they go.
        version_info = parse_version_info(self.data, image)
        try:
            from .pe.hashing import hashes_of

            hashes = hashes_of(self.data, self.source, image, request, limits, self.release)
        except _primitive_errors(hashing=True) as exc:
            # hashlib refusing an algorithm (e.g. MD5 under FIPS): no digest, no verdict.
            algorithms = ",".join(sorted(request.image)) or "sha256"
            finding = primitive_failure(exc, algorithms, None)
            return Report(
                path=self.path,
                status=Status.INVALID if sigs else Status.UNSIGNED,
                findings=(*self.findings, finding),
                image=image.info(),
                error=finding.detail,
            )
        if efi:
            self._check_efi_form(hashes)

        results = [self._check_signature(s, hashes) for s in sigs]
        catalog = None
        if self.opts.catalogs is not None:
            catalog = self._check_catalog(hashes)
        self._check_load_requirements(results, catalog)

        signed = signed_embedded or (catalog is not None)
        status = decide_status(malformed=self.malformed, signed=signed, findings=self.findings)
        return Report(
            path=self.path,
            status=status,
            findings=tuple(self.findings),
            signatures=tuple(results),
            image=image.info(),
            authentihash={k: v.hex() for k, v in sorted(hashes.image.items())},
            authentihash_unpadded={k: v.hex() for k, v in sorted(hashes.image_unpadded.items())},
            first_page_hash={k: v.hex() for k, v in sorted(hashes.first_page.items())},
            flat_hash={k: v.hex() for k, v in sorted(hashes.flat.items())},
            catalog=catalog,
            version_info=version_info.to_dict() if version_info is not None else None,
        )

    # -- certificate table and signature parsing -------------------------------------------

    def _read_cert_table_in(self, demand: DemandBuffer) -> None:
        """The table parser reads padding through plain views (not the Reader): read a table it
        will walk in whole first (one bounded read: at most ``max_cert_table_size``)."""
        image, limit = self.image, self.opts.limits.max_cert_table_size
        start, size = image.cert_table_offset, image.cert_table_size
        if image.has_cert_table and size <= limit and image.raw_data_end <= start < image.size:
            demand.ensure(start, min(size, image.size - start))

    def _add_table_findings(self, findings: Iterable[Finding]) -> None:
        for f in findings:
            if f.code is _C.CERT_TABLE_PADDING and self.opts.cert_padding_check:
                f = replace(f, code=_C.CERT_TABLE_PADDING_REJECTED)
            self.findings.append(f)

    def _parse_signatures(self, entries: Iterable[CertEntry]) -> list[_Sig]:
        from .authenticode.signeddata import parse_signatures
        from .pe.pagehash import parse_page_hash_table

        out: list[_Sig] = []
        for entry in entries:
            try:
                parsed = parse_signatures(
                    entry.data,
                    entry.index,
                    self.opts.limits,
                    first_index=len(out),
                )
            except MalformedError as exc:
                self.malformed = True
                self.findings.append(
                    Finding(
                        _C.SIGNATURE_MALFORMED,
                        f"certificate entry {entry.index}: {exc.diagnostics()}",
                        offset=entry.offset,
                    )
                )
                continue
            for sig in parsed:
                holder = _Sig(sig)
                self.findings.extend(sig.findings)
                if sig.page_hash_raw is not None and sig.page_hash_algorithm is not None:
                    table, problems = parse_page_hash_table(
                        sig.page_hash_raw,
                        sig.page_hash_algorithm,
                        self.image,
                        self.opts.limits,
                        sig.index,
                    )
                    self.findings.extend(problems)
                    holder.page_table = table
                out.append(holder)
        index = 0
        for holder in out:
            if holder.page_table is not None:
                holder.page_index = index
                index += 1
        return out

    # -- per-signature checks -------------------------------------------------------------

    def _check_signature(self, holder: _Sig, hashes: HashResult) -> SignatureResult:
        from .authenticode.signer import verify_signer

        sig = holder.parsed
        index: int = sig.index
        alg: str = sig.digest_algorithm
        computed = hashes.image.get(alg)
        if computed is None:
            image_check = Check.NOT_CHECKED
        elif computed == sig.signed_digest:
            image_check = Check.VALID
        else:
            image_check = Check.INVALID
            self.findings.append(
                Finding(
                    _C.IMAGE_HASH_MISMATCH,
                    f"{alg} image hash {computed.hex()} != signed {sig.signed_digest.hex()}",
                    signature=index,
                )
            )

        page_check = self._check_pages(holder, hashes)
        try:
            verdict = verify_signer(sig, self._trust(), at=self.opts.at)
        except _primitive_errors(hashing=False) as exc:
            from .authenticode.signer import SignerVerdict

            verdict = SignerVerdict.failed(primitive_failure(exc, alg, index))
        self.findings.extend(verdict.findings)
        if self.opts.revocation is not None and verdict.chain_certs:
            from .revocation import check_chain

            self.findings.extend(
                check_chain(
                    self.opts.revocation,
                    verdict.chain_certs,
                    timestamp=verdict.timestamp,
                    lifetime_signing=verdict.lifetime_signing,
                    signature=index,
                )
            )
        valid = not any(
            f.signature == index and f.severity is Severity.ERROR for f in self.findings
        )
        return signature_result(
            verdict,
            index=index,
            parent=sig.parent,
            entry=sig.entry,
            digest_algorithm=alg,
            image_hash=image_check,
            page_hashes=page_check,
            page_hash_algorithm=sig.page_hash_algorithm,
            signed_digest=sig.signed_digest,
            valid=valid,
        )

    def _check_pages(self, holder: _Sig, hashes: HashResult) -> Check:
        sig = holder.parsed
        index: int = sig.index
        if sig.page_hash_raw is None:
            self._missing_page_hashes(index)
            return Check.ABSENT
        if holder.page_table is None or holder.page_index is None:
            return Check.INVALID  # the table itself is malformed (already a finding)
        from .pe.pagehash import compare_page_hashes

        computed = hashes.pages[holder.page_index]
        problems = compare_page_hashes(holder.page_table, computed, index, self.image)
        self.findings.extend(problems)
        return Check.INVALID if problems else Check.VALID

    def _missing_page_hashes(self, index: int) -> None:
        image = self.image
        critical = image.is_kernel_driver or image.force_integrity
        required = self.opts.require_page_hashes
        if required == "all" or (required == "drivers" and critical):
            self.findings.append(
                Finding(_C.PAGE_HASHES_REQUIRED, "signed without page hashes", signature=index)
            )
        elif critical:
            kind = "kernel driver" if image.is_kernel_driver else "FORCE_INTEGRITY image"
            self.findings.append(
                Finding(
                    _C.PAGE_HASHES_ABSENT_INTEGRITY,
                    f"{kind} signed without page hashes",
                    signature=index,
                )
            )

    def _check_efi_form(self, hashes: HashResult) -> None:
        for alg, spec in sorted(hashes.efi_spec.items()):
            linear = hashes.image.get(alg)
            if linear is not None and linear != spec:
                self.findings.append(
                    Finding(
                        _C.EFI_HASH_FORM_MISMATCH,
                        f"{alg}: linear {linear.hex()} (Windows) != section-sorted "
                        f"{spec.hex()} (UEFI firmware); data outside the sections is hashed "
                        "differently",
                    )
                )

    # -- catalogs ---------------------------------------------------------------------------

    def _check_catalog(self, hashes: HashResult) -> CatalogMatch | None:
        digests = dict(hashes.image)
        # Unsigned files are looked up with both padded and unpadded digests (deny lists and
        # catalogs in the wild use both).
        candidates = [digests, dict(hashes.image_unpadded)]
        from .catalog.match import catalog_lookup

        for candidate in candidates:
            match, findings = catalog_lookup(candidate, self.opts, self._page_checker())
            if match is not None or findings:
                self.findings.extend(findings)
                return match
        return None

    def _page_checker(self) -> PageChecker:
        from .catalog.match import PageChecker

        return PageChecker(self.data, self.image, self.opts, self.source)

    # -- load requirements ---------------------------------------------------------------

    def _check_load_requirements(
        self, results: list[SignatureResult], catalog: CatalogMatch | None
    ) -> None:
        image = self.image
        for section in image.shared_writable_sections:
            self.findings.append(
                Finding(
                    _C.SHARED_WRITABLE_SECTION,
                    f"section {section.name!r} is SHARED and WRITE "
                    f"(characteristics {section.characteristics:#010x})",
                    section=section.name,
                    offset=section.raw_offset,
                )
            )
        validly_signed = any(r.valid for r in results) or (
            catalog is not None and catalog.signature.valid
        )
        if validly_signed:
            return
        if image.is_kernel_driver and self.opts.drivers_must_be_signed:
            state = "has no valid signature" if results else "is not signed"
            self.findings.append(Finding(_C.UNSIGNED_DRIVER, f"kernel-mode driver {state}"))
        elif image.force_integrity:
            state = "has no valid signature" if results else "is not signed"
            self.findings.append(
                Finding(_C.UNSIGNED_FORCE_INTEGRITY, f"FORCE_INTEGRITY (0x0080) image {state}")
            )

    def _trust(self) -> TrustStore:
        if self.opts.trust is not None:
            return self.opts.trust
        from .authenticode.trust import TrustStore

        return TrustStore.default()


_SUPPORTED = frozenset({"md5", "sha1", "sha256", "sha384", "sha512"})


def _primitive_errors(*, hashing: bool) -> tuple[type[Exception], ...]:
    """What a cryptographic primitive raises when it fails rather than answering: OpenSSL
    internal errors, and (around hashing only, where nothing else raises it) hashlib's
    ValueError for an algorithm the build refuses."""
    from cryptography.exceptions import InternalError

    return (InternalError, ValueError) if hashing else (InternalError,)


def primitive_failure(exc: Exception, algorithm: str, signature: int | None) -> Finding:
    """The finding (event 5057) for a primitive that raised. The detail's shape,
    ``ALGORITHM (PROVIDER): REASON``, is what the 5057 event's fields are read from."""
    provider = "OpenSSL via cryptography" if "cryptography" in type(exc).__module__ else "hashlib"
    reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
    return Finding(_C.PRIMITIVE_FAILED, f"{algorithm} ({provider}): {reason}", signature=signature)
