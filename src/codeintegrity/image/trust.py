"""The image's own trust material: CatRoot catalogs and Code Integrity policies.

Catalogs are copied out once per content (``<cache>/image-catalogs/<sha256>.cat``, never
rewritten, so the persisted catalog index reuses them on the next run) and indexed with the
ordinary :class:`~codeintegrity.catalog.index.CatalogIndex`. Policies are the binary forms
Windows enforces: ``System32\\CodeIntegrity\\SiPolicy.p7b``, ``CiPolicies\\Active\\*.cip`` (also on
the EFI system partition under ``EFI\\Microsoft\\Boot``) and the vulnerable driver blocklist
``driversipolicy.p7b``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CIError

if TYPE_CHECKING:
    from datetime import datetime

    from ..authenticode.trust import TrustStore
    from ..catalog.index import CatalogIndex
    from ..policy.model import ImportResult, Policy
    from ..policy.signed_policy import PolicySignature
    from .limits import ImageLimits
    from .source import Volume

CATROOT = "Windows/System32/CatRoot"
CODE_INTEGRITY = "Windows/System32/CodeIntegrity"
BLOCKLIST_FILE = f"{CODE_INTEGRITY}/driversipolicy.p7b"
# Translated policies by (content hash, shown name): the same blocklist on many images (or the
# same image in several containers) is parsed once per process.
_POLICY_MEMO: dict[tuple[str, str], object] = {}
_POLICY_MEMO_SIZE = 32


@dataclass(frozen=True)
class ImagePolicy:
    """One policy found on the image, translated, with where it came from."""

    windows_path: str
    policy: Policy  # a base policy: merged with the supplementals Windows applies to it
    # "active" (SiPolicy / CiPolicies\Active), "supplemental" (an active policy that extends a
    # base one: enforced as part of it, never on its own) or "blocklist" (driversipolicy)
    kind: str
    untranslated: int  # rules and options the translation had to leave out
    merged_into: str = ""  # a supplemental: the base policy file it was merged into
    supplementals: tuple[str, ...] = ()  # a base: the supplemental policy files merged into it
    signature: PolicySignature | None = None  # None: not a PKCS#7 (signed) file

    @property
    def signed(self) -> bool:
        return self.signature is not None

    @property
    def refused(self) -> bool:
        """Windows does not load it: a signed policy whose signature does not verify."""
        return self.signature is not None and self.signature.refused

    def enforced(self, blocklist_enforced: bool) -> bool:
        if self.refused:
            return False
        if self.kind == "blocklist":
            return blocklist_enforced
        return self.kind == "active" or bool(self.merged_into)


@dataclass
class TrustMaterial:
    catalogs: CatalogIndex | None = None
    catalog_names: dict[str, str] = field(default_factory=dict)  # extracted path -> C:\... path
    catalog_count: int = 0
    policies: list[ImagePolicy] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def close(self) -> None:
        if self.catalogs is not None:
            self.catalogs.close()


def catalog_cache_dir(environ: os._Environ[str] | dict[str, str] | None = None) -> Path:
    from ..catalog.store import default_cache_path

    return Path(default_cache_path(environ)).parent / "image-catalogs"


def extract_catalogs(
    volume: Volume, cache_dir: Path, warnings: list[str], windows: str, limit: int
) -> dict[str, str]:
    """Copy every CatRoot *.cat out by content hash; returns extracted path -> Windows path."""
    out: dict[str, str] = {}
    if not volume.is_dir(CATROOT):
        warnings.append(f"{windows}{CATROOT.replace('/', chr(92))}: no catalog root on the image")
        return out
    cache_dir.mkdir(parents=True, exist_ok=True)
    for rel in volume.walk(CATROOT):
        if not rel.lower().endswith(".cat"):
            continue
        shown = windows + rel.replace("/", "\\")
        try:
            data = volume.read(rel, limit)
        except OSError as exc:
            warnings.append(f"{shown}: catalog skipped: {exc.strerror or exc}")
            continue
        if len(data) > limit:
            warnings.append(f"{shown}: catalog skipped: larger than {limit} bytes")
            continue
        target = cache_dir / f"{hashlib.sha256(data).hexdigest()}.cat"
        if not target.exists():
            partial = target.with_suffix(f".{os.getpid()}.tmp")
            partial.write_bytes(data)
            # A fixed mtime: the index keys catalogs by (path, size, mtime).
            os.utime(partial, ns=(0, 0))
            partial.replace(target)
        out[str(target.resolve())] = shown
    return out


def load_catalogs(
    volume: Volume,
    material: TrustMaterial,
    windows: str,
    extra: list[str],
    cache_dir: Path | None,
    index_path: str | None,
    limits: ImageLimits,
) -> None:
    from ..catalog.index import CatalogIndex

    names = extract_catalogs(
        volume,
        cache_dir or catalog_cache_dir(),
        material.warnings,
        windows,
        limits.max_catalog_size,
    )
    paths = sorted(names) + list(extra)
    material.catalog_names = names
    if not paths:
        return
    index = CatalogIndex.open(paths, cache_path=index_path)
    material.warnings.extend(index.warnings)
    material.catalogs = index
    material.catalog_count = index.catalog_count


def policy_files(volumes: list[Volume], system: Volume) -> list[tuple[Volume, str, str]]:
    """(volume, relative path, kind) of every Code Integrity policy file Windows would read."""
    found: list[tuple[Volume, str, str]] = []
    if system.is_file(f"{CODE_INTEGRITY}/SiPolicy.p7b"):
        found.append((system, f"{CODE_INTEGRITY}/SiPolicy.p7b", "active"))
    for volume in volumes:
        for folder in (
            f"{CODE_INTEGRITY}/CiPolicies/Active",
            "EFI/Microsoft/Boot/CiPolicies/Active",
        ):
            if volume is not system and folder.startswith("Windows"):
                continue
            for name, is_dir in volume.listdir(folder):
                if not is_dir and name.lower().endswith(".cip"):
                    found.append((volume, f"{folder}/{name}", "active"))
    if system.is_file(BLOCKLIST_FILE):
        found.append((system, BLOCKLIST_FILE, "blocklist"))
    return found


def load_policies(
    volumes: list[Volume],
    system: Volume,
    material: TrustMaterial,
    shown: dict[int, str],
    limits: ImageLimits,
    trust: TrustStore | None = None,
    at: datetime | None = None,
) -> None:
    """Parse every policy file; one that does not parse is a warning, not a stop. Then merge
    each base policy with its supplementals (:mod:`codeintegrity.policy.supplemental`)."""
    from ..policy.sipolicy_bin import import_binary_policy, unwrap
    from ..policy.supplemental import ALLOW_SUPPLEMENTALS, is_supplemental

    loaded: list[tuple[ImagePolicy, ImportResult]] = []
    for volume, rel, kind in policy_files(volumes, system):
        name = shown.get(volume.number, f"Volume{volume.number}:\\") + rel.replace("/", "\\")
        try:
            data = bytes(volume.read(rel, limits.max_policy_size))
            if len(data) > limits.max_policy_size:
                raise CIError(f"larger than {limits.max_policy_size} bytes")
            _payload, signed = unwrap(data)
            signature = _signature(data, trust, at) if signed else None
            key = (hashlib.sha256(data).hexdigest(), name)
            result = _POLICY_MEMO.get(key)
            if result is None:
                result = import_binary_policy(data, source=name)
                if len(_POLICY_MEMO) >= _POLICY_MEMO_SIZE:
                    _POLICY_MEMO.pop(next(iter(_POLICY_MEMO)))
                _POLICY_MEMO[key] = result
        except (CIError, OSError) as exc:
            # Parser errors name the file already; read errors do not.
            text = (
                exc.diagnostics() if isinstance(exc, CIError) else f"{name}: {exc.strerror or exc}"
            )
            material.warnings.append(f"policy skipped: {text}")
            continue
        imported: ImportResult = result  # type: ignore[assignment]
        # Supplementals are merged here: neither "imported on its own" nor the base's option
        # that allows them is left out any more.
        untranslated = sum(
            count
            for key, count in imported.untranslated.items()
            if not key.startswith("supplemental policy") and ALLOW_SUPPLEMENTALS not in key
        )
        if kind == "active" and is_supplemental(imported.policy):
            kind = "supplemental"
        elif imported.policy.has_allow_rules(None) and untranslated:
            material.warnings.append(
                f"{name}: allowlist policy with {untranslated} rules or options that could not "
                "be translated: its denials may include files Windows allows"
            )
        if signature is not None:
            material.warnings.extend(_signature_warnings(name, signature))
        found = ImagePolicy(name, imported.policy, kind, untranslated, signature=signature)
        loaded.append((found, imported))
    material.policies.extend(merge_with_bases(loaded, material.warnings))


def merge_with_bases(
    loaded: list[tuple[ImagePolicy, ImportResult]], warnings: list[str]
) -> list[ImagePolicy]:
    """Each active base policy with the supplementals naming it (BasePolicyID = its PolicyID),
    when it allows supplementals; a supplemental without a base that takes it is reported and
    enforces nothing (Windows does not load it either)."""
    from dataclasses import replace

    from ..policy.supplemental import ALLOW_SUPPLEMENTALS, merge_supplementals

    bases = {
        found.policy.guid: (found, imported)
        for found, imported in loaded
        if found.kind == "active" and found.policy.guid and not found.refused
    }
    members: dict[str, list[ImagePolicy]] = {}
    out: list[ImagePolicy] = []
    for found, _imported in loaded:
        if found.kind != "supplemental":
            continue
        base = bases.get(found.policy.base_guid)
        if found.refused:
            pass  # its signature warning says why it does not count
        elif base is None:
            warnings.append(
                f"{found.windows_path}: supplemental policy of {found.policy.base_guid}, which "
                "is not an active base policy on the image: not enforced"
            )
        elif ALLOW_SUPPLEMENTALS not in base[1].options:
            warnings.append(
                f"{found.windows_path}: its base {base[0].windows_path} does not allow "
                f"supplemental policies ({ALLOW_SUPPLEMENTALS}): not enforced"
            )
        else:
            members.setdefault(found.policy.base_guid, []).append(found)
            found = replace(found, merged_into=base[0].windows_path)
        out.append(found)
    merged: list[ImagePolicy] = []
    for found, _imported in loaded:
        group = members.get(found.policy.guid, []) if found.kind == "active" else []
        if group:
            result = merge_supplementals(found.policy, [member.policy for member in group])
            for kind, count in result.ignored.items():
                warnings.append(
                    f"{found.windows_path}: {count} x {kind} in its supplemental policies, not "
                    "applied"
                )
            found = replace(
                found,
                policy=result.policy,
                supplementals=tuple(member.windows_path for member in group),
            )
        if found.kind != "supplemental":
            merged.append(found)
    # Bases (and the blocklist) first, in the order found, then the supplementals.
    return merged + out


def _signature(data: bytes, trust: TrustStore | None, at: datetime | None) -> PolicySignature:
    from ..authenticode.trust import TrustStore
    from ..policy.signed_policy import check_policy_signature

    return check_policy_signature(data, trust if trust is not None else TrustStore.default(), at)


def _signature_warnings(name: str, signature: PolicySignature) -> list[str]:
    problems = "; ".join(signature.problems) or "no reason given"
    if signature.refused:
        return [
            f"{name}: signed policy whose signature does not verify ({problems}): Windows "
            "refuses to load it; not enforced here"
        ]
    out = []
    if not signature.trusted:
        out.append(
            f"{name}: policy signed by {signature.signer or '?'}, not trusted here ({problems})"
        )
    if signature.update_signer is False:
        out.append(
            f"{name}: policy signed by {signature.signer or '?'}, which matches none of its "
            "UpdatePolicySigners: Windows may refuse to load it (enforced here)"
        )
    return out
