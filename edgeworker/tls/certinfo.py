"""nginx's client-certificate variables, computed from the certificate's DER.

:func:`cert_vars` takes what ``SSLSocket.getpeercert(binary_form=True)`` returns and gives the
values nginx 1.22 (built with OpenSSL) puts in ``$ssl_client_s_dn``, ``$ssl_client_i_dn``,
``$ssl_client_serial``, ``$ssl_client_fingerprint``, ``$ssl_client_cert``,
``$ssl_client_raw_cert``, ``$ssl_client_v_start``, ``$ssl_client_v_end`` and
``$ssl_client_v_remain``, byte for byte:

- the distinguished names are those of ``X509_NAME_print_ex(..., XN_FLAG_RFC2253)`` (nginx's
  format since 1.11.6; ``openssl x509 -nameopt RFC2253`` prints the same): the RDNs last
  first, joined by ``,``; the attributes of a multi-valued RDN joined by ``+``, also last
  first; each as ``SHORTNAME=value`` with OpenSSL's short name (``CN``, ``emailAddress``…);
  in the value ``,+"\\<>;`` are escaped with a backslash, and so are a leading ``#`` or space
  and a trailing space (a one-character value counts only as trailing); control characters
  and every byte of a non-ASCII character (its UTF-8 form, whatever the string type) as
  ``\\XX`` in upper-case hex. An attribute whose type OpenSSL does not know, or a value that
  is not a character string, is written ``OID=#`` followed by the hex of its DER encoding;
- the serial number in upper-case hex, two digits per byte (``00`` for zero, ``-`` before a
  negative one);
- the fingerprint: the SHA-1 of the DER, lower-case hex without separators;
- the dates as ``ASN1_TIME_print`` writes them: ``"Dec  7 14:00:00 2026 GMT"``;
- ``ssl_client_v_remain``: whole days until the end of validity, ``"0"`` when less than one
  day is left or it has passed.

Parsing uses ``cryptography`` (which also checks the whole certificate) plus a small DER
reader for the names and the serial, so their encoding (string types, the order of the
attributes of a multi-valued RDN) is read as sent, the way OpenSSL reads it.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import time

from cryptography import x509

__all__ = ["cert_vars", "format_dn", "format_serial", "format_time", "pem"]

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

#: OpenSSL's short names (OBJ_nid2sn) of the attribute types a name may carry: X.520's
#: (2.5.4.*), and the PKCS #9, RFC 4519 and EV ones; any other OID is printed dotted, as
#: OpenSSL prints an OID it does not know
_SHORT_NAMES = {
    "2.5.4.3": "CN",
    "2.5.4.4": "SN",
    "2.5.4.5": "serialNumber",
    "2.5.4.6": "C",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.9": "street",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.12": "title",
    "2.5.4.13": "description",
    "2.5.4.14": "searchGuide",
    "2.5.4.15": "businessCategory",
    "2.5.4.16": "postalAddress",
    "2.5.4.17": "postalCode",
    "2.5.4.18": "postOfficeBox",
    "2.5.4.19": "physicalDeliveryOfficeName",
    "2.5.4.20": "telephoneNumber",
    "2.5.4.21": "telexNumber",
    "2.5.4.22": "teletexTerminalIdentifier",
    "2.5.4.23": "facsimileTelephoneNumber",
    "2.5.4.24": "x121Address",
    "2.5.4.25": "internationaliSDNNumber",
    "2.5.4.26": "registeredAddress",
    "2.5.4.27": "destinationIndicator",
    "2.5.4.28": "preferredDeliveryMethod",
    "2.5.4.29": "presentationAddress",
    "2.5.4.30": "supportedApplicationContext",
    "2.5.4.31": "member",
    "2.5.4.32": "owner",
    "2.5.4.33": "roleOccupant",
    "2.5.4.34": "seeAlso",
    "2.5.4.35": "userPassword",
    "2.5.4.36": "userCertificate",
    "2.5.4.37": "cACertificate",
    "2.5.4.38": "authorityRevocationList",
    "2.5.4.39": "certificateRevocationList",
    "2.5.4.40": "crossCertificatePair",
    "2.5.4.41": "name",
    "2.5.4.42": "GN",
    "2.5.4.43": "initials",
    "2.5.4.44": "generationQualifier",
    "2.5.4.45": "x500UniqueIdentifier",
    "2.5.4.46": "dnQualifier",
    "2.5.4.47": "enhancedSearchGuide",
    "2.5.4.48": "protocolInformation",
    "2.5.4.49": "distinguishedName",
    "2.5.4.50": "uniqueMember",
    "2.5.4.51": "houseIdentifier",
    "2.5.4.52": "supportedAlgorithms",
    "2.5.4.53": "deltaRevocationList",
    "2.5.4.54": "dmdName",
    "2.5.4.65": "pseudonym",
    "2.5.4.72": "role",
    "2.5.4.97": "organizationIdentifier",
    "2.5.4.98": "c3",
    "2.5.4.99": "n3",
    "2.5.4.100": "dnsName",
    "0.9.2342.19200300.100.1.1": "UID",
    "0.9.2342.19200300.100.1.3": "mail",
    "0.9.2342.19200300.100.1.25": "DC",
    "1.2.840.113549.1.9.1": "emailAddress",
    "1.2.840.113549.1.9.2": "unstructuredName",
    "1.2.840.113549.1.9.3": "contentType",
    "1.2.840.113549.1.9.7": "challengePassword",
    "1.2.840.113549.1.9.8": "unstructuredAddress",
    "1.3.6.1.4.1.311.60.2.1.1": "jurisdictionL",
    "1.3.6.1.4.1.311.60.2.1.2": "jurisdictionST",
    "1.3.6.1.4.1.311.60.2.1.3": "jurisdictionC",
}

#: bytes per character of the universal string types OpenSSL prints as text (0: UTF8String,
#: taken byte by byte); every other type is dumped as ``#`` + hex of its DER
_CHAR_WIDTH = {12: 0, 18: 1, 19: 1, 20: 1, 22: 1, 23: 1, 24: 1, 26: 1, 28: 4, 30: 2}

_SPECIAL = frozenset(b',+"\\<>;')
_HEX = "0123456789ABCDEF"


class _Der:
    """Reads DER TLVs from ``data[pos:end]``; malformed input raises ``ValueError``."""

    __slots__ = ("data", "pos", "end")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def more(self) -> bool:
        return self.pos < self.end

    def read(self) -> tuple[int, int, int, int]:
        """The next TLV: (identifier octet, start of the TLV, start of the value, end)."""
        data, start = self.data, self.pos
        if start + 2 > self.end:
            raise ValueError("truncated DER")
        ident = data[start]
        pos = start + 1
        if ident & 0x1F == 0x1F:  # high tag number: skip its octets
            while pos < self.end and data[pos] & 0x80:
                pos += 1
            pos += 1
        if pos >= self.end:
            raise ValueError("truncated DER")
        length = data[pos]
        pos += 1
        if length & 0x80:
            n = length & 0x7F
            if n == 0 or n > 4 or pos + n > self.end:
                raise ValueError("bad DER length")
            length = int.from_bytes(data[pos : pos + n], "big")
            pos += n
        if pos + length > self.end:
            raise ValueError("truncated DER")
        self.pos = pos + length
        return ident, start, pos, pos + length

    def expect(self, ident: int) -> tuple[int, int]:
        """The next TLV, which must have identifier ``ident``: (start of value, end)."""
        got, _, vstart, vend = self.read()
        if got != ident:
            raise ValueError(f"DER: expected tag 0x{ident:02x}, found 0x{got:02x}")
        return vstart, vend


def _oid_text(body: bytes) -> str:
    """Dotted form of an OBJECT IDENTIFIER's value octets."""
    arcs: list[int] = []
    value = 0
    for b in body:
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            arcs.append(value)
            value = 0
    if not arcs:
        raise ValueError("empty OBJECT IDENTIFIER")
    first = arcs[0]
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(str(a) for a in head + arcs[1:])


def _short_name(oid: str) -> str | None:
    """OpenSSL's short name of ``oid``, or None when it has none (then printed dotted)."""
    return _SHORT_NAMES.get(oid)


def _print_value(tag: int, value: bytes, out: list[str]) -> None:
    """Append OpenSSL's RFC 2253 text of a string value (universal ``tag``) to ``out``."""
    width = _CHAR_WIDTH[tag]
    if width == 0:  # UTF8String: byte by byte (every non-ASCII byte gets escaped)
        width, convert = 1, False
    else:
        convert = True
    if len(value) % width:
        raise ValueError(f"string of type {tag} has a length that is not a multiple of {width}")
    n = len(value) // width
    for i in range(n):
        c = int.from_bytes(value[i * width : (i + 1) * width], "big")
        first = i == 0 and n > 1  # a one-character value counts only as the last one
        last = i == n - 1
        if convert and c > 0x7F:
            if 0xD800 <= c < 0xE000 or c > 0x10FFFF:
                continue  # OpenSSL cannot write it as UTF-8 and writes nothing
            out.extend(f"\\{b:02X}" for b in chr(c).encode("utf-8"))
        elif c > 0x7F or c < 0x20 or c == 0x7F:
            out.append(f"\\{c:02X}")
        elif (
            c in _SPECIAL
            or (first and (c == 0x20 or c == 0x23))  # leading space or '#'
            or (last and c == 0x20)
        ):
            out.append("\\" + chr(c))
        else:
            out.append(chr(c))


def format_dn(name_der: bytes) -> str:
    """A DER ``Name`` as nginx's ``$ssl_client_s_dn`` (``X509_NAME_print_ex``, RFC 2253).

    Raises ``ValueError`` if ``name_der`` is not a DER ``Name``.
    """
    top = _Der(name_der)
    start, end = top.expect(0x30)
    if top.more():
        raise ValueError("trailing bytes after the Name")
    rdns: list[list[tuple[str, int, int, int, int]]] = []
    sets = _Der(name_der, start, end)
    while sets.more():
        set_start, set_end = sets.expect(0x31)
        attrs = []
        atvs = _Der(name_der, set_start, set_end)
        while atvs.more():
            a_start, a_end = atvs.expect(0x30)
            atv = _Der(name_der, a_start, a_end)
            o_start, o_end = atv.expect(0x06)
            ident, tlv_start, v_start, v_end = atv.read()
            attrs.append((_oid_text(name_der[o_start:o_end]), ident, tlv_start, v_start, v_end))
        rdns.append(attrs)
    out: list[str] = []
    for r, attrs in enumerate(reversed(rdns)):
        for a, (oid, ident, tlv_start, v_start, v_end) in enumerate(reversed(attrs)):
            if a:
                out.append("+")
            elif r:
                out.append(",")
            short = _short_name(oid)
            out.append((short or oid) + "=")
            if short is not None and ident in _CHAR_WIDTH:
                _print_value(ident, name_der[v_start:v_end], out)
            else:
                out.append("#" + name_der[tlv_start:v_end].hex().upper())
    return "".join(out)


def format_serial(value: int) -> str:
    """A serial number as ``i2a_ASN1_INTEGER`` writes it (nginx's ``$ssl_client_serial``)."""
    magnitude = abs(value)
    digits = magnitude.to_bytes((magnitude.bit_length() + 7) // 8 or 1, "big").hex().upper()
    # OpenSSL breaks the line after every 35 bytes (serials of RFC 5280 have at most 20)
    lines = [digits[i : i + 70] for i in range(0, len(digits), 70)]
    return ("-" if value < 0 else "") + "\\\n".join(lines)


def format_time(when: datetime.datetime) -> str:
    """A UTC time as ``ASN1_TIME_print`` writes it: ``"Dec  7 14:00:00 2026 GMT"``."""
    return (
        f"{_MONTHS[when.month - 1]} {when.day:2d} "
        f"{when.hour:02d}:{when.minute:02d}:{when.second:02d} {when.year} GMT"
    )


def pem(der: bytes) -> str:
    """The certificate in PEM, as ``PEM_write_bio_X509`` writes it (64-column base64)."""
    b64 = base64.b64encode(der).decode("ascii")
    body = "\n".join(b64[i : i + 64] for i in range(0, len(b64), 64))
    return f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n"


def _utc(cert: x509.Certificate, which: str) -> datetime.datetime:
    when = getattr(cert, which + "_utc", None)
    if when is None:  # cryptography < 42: naive datetimes in UTC
        when = getattr(cert, which).replace(tzinfo=datetime.UTC)
    return when


def _tbs_names_and_serial(tbs: bytes) -> tuple[bytes, bytes, int]:
    """(issuer Name DER, subject Name DER, serial) read from the TBSCertificate as encoded."""
    top = _Der(tbs)
    start, end = top.expect(0x30)
    fields = _Der(tbs, start, end)
    ident, _, v_start, v_end = fields.read()
    if ident == 0xA0:  # [0] EXPLICIT version
        ident, _, v_start, v_end = fields.read()
    if ident != 0x02:
        raise ValueError("TBSCertificate: no serial number")
    serial = int.from_bytes(tbs[v_start:v_end], "big", signed=True)
    fields.expect(0x30)  # signature algorithm
    _, issuer_start, _, issuer_end = fields.read()
    fields.expect(0x30)  # validity
    _, subject_start, _, subject_end = fields.read()
    return tbs[issuer_start:issuer_end], tbs[subject_start:subject_end], serial


def cert_vars(der: bytes, now: float | None = None) -> dict[str, str]:
    """nginx's ``$ssl_client_*`` variables of a client certificate given in DER.

    Keys: ``ssl_client_s_dn``, ``ssl_client_i_dn``, ``ssl_client_serial``,
    ``ssl_client_fingerprint``, ``ssl_client_cert``, ``ssl_client_raw_cert``,
    ``ssl_client_v_start``, ``ssl_client_v_end``, ``ssl_client_v_remain`` (see the module
    docstring for each format). ``ssl_client_raw_cert`` is the PEM; ``ssl_client_cert`` is
    nginx's deprecated form of it: the same PEM without its final newline and with a tab
    after every other newline (each line after the first starts with a tab), so it fits in
    one header line. ``now`` (seconds since the epoch, default: the clock) is the moment
    ``ssl_client_v_remain`` counts from.

    Raises ``ValueError`` when ``der`` is not a DER X.509 certificate.
    """
    if not isinstance(der, bytes | bytearray | memoryview):
        raise ValueError(f"client certificate: expected DER bytes, got {type(der).__name__}")
    der = bytes(der)
    try:
        cert = x509.load_der_x509_certificate(der)
        issuer, subject, serial = _tbs_names_and_serial(cert.tbs_certificate_bytes)
        s_dn = format_dn(subject)
        i_dn = format_dn(issuer)
        start = _utc(cert, "not_valid_before")
        end = _utc(cert, "not_valid_after")
    except ValueError as exc:
        raise ValueError(f"client certificate is not a DER X.509 certificate: {exc}") from exc
    raw = pem(der)
    now_s = int(time.time() if now is None else now)
    end_s = int(end.timestamp())
    remain = 0 if end_s < now_s + 86400 else (end_s - now_s) // 86400
    return {
        "ssl_client_s_dn": s_dn,
        "ssl_client_i_dn": i_dn,
        "ssl_client_serial": format_serial(serial),
        "ssl_client_fingerprint": hashlib.sha1(der).hexdigest(),  # noqa: S324 - nginx's choice
        "ssl_client_cert": raw[:-1].replace("\n", "\n\t"),
        "ssl_client_raw_cert": raw,
        "ssl_client_v_start": format_time(start),
        "ssl_client_v_end": format_time(end),
        "ssl_client_v_remain": str(remain),
    }
