"""asn1crypto specifications of the Microsoft structures inside an Authenticode signature.

Shapes follow what signers actually emit (osslsigncode, signtool), not the Authenticode_PE.docx
text: ``SpcAttributeTypeAndOptionalValue.value`` has no ``[0]`` tag in real files.
"""

from __future__ import annotations

from asn1crypto import algos, core


class SpcAttributeTypeAndOptionalValue(core.Sequence):
    _fields = [
        ("type", core.ObjectIdentifier),
        ("value", core.Any, {"optional": True}),
    ]


class DigestInfo(core.Sequence):
    _fields = [
        ("digest_algorithm", algos.DigestAlgorithm),
        ("digest", core.OctetString),
    ]


class SpcIndirectDataContent(core.Sequence):
    _fields = [
        ("data", SpcAttributeTypeAndOptionalValue),
        ("message_digest", DigestInfo),
    ]


class SpcString(core.Choice):
    _alternatives = [
        ("unicode", core.BMPString, {"implicit": 0}),
        ("ascii", core.IA5String, {"implicit": 1}),
    ]


class SpcSerializedObject(core.Sequence):
    _fields = [
        ("class_id", core.OctetString),
        ("serialized_data", core.OctetString),
    ]


class SpcLink(core.Choice):
    _alternatives = [
        ("url", core.IA5String, {"implicit": 0}),
        ("moniker", SpcSerializedObject, {"implicit": 1}),
        ("file", SpcString, {"explicit": 2}),
    ]


class SpcPeImageFlags(core.BitString):
    _map = {0: "include_resources", 1: "include_debug_info", 2: "include_import_address_table"}


class SpcPeImageData(core.Sequence):
    _fields = [
        ("flags", SpcPeImageFlags, {"optional": True}),
        ("file", SpcLink, {"explicit": 0, "optional": True}),
    ]


class PageHashValues(core.SetOf):
    # "unnecessary SET wrapped around the octets" (relic): one OCTET STRING holding the table
    _child_spec = core.OctetString


class PageHashAttribute(core.Sequence):
    _fields = [
        ("type", core.ObjectIdentifier),
        ("values", PageHashValues),
    ]


class PageHashAttributes(core.SetOf):
    _child_spec = PageHashAttribute
