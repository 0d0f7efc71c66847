"""nginx's $ssl_client_* variables from a client certificate's DER, checked against OpenSSL.

Certificates with awkward names (RFC 2253 specials, leading and trailing spaces, a leading
``#``, UTF-8 of every width, control characters, BMP/Universal/Printable/IA5 strings,
multi-valued RDNs, emailAddress, an OID OpenSSL does not know) are made here, and every value
is compared with what ``openssl x509 -nameopt RFC2253`` prints: nginx formats these variables
with the same OpenSSL calls (X509_NAME_print_ex with XN_FLAG_RFC2253, i2a_ASN1_INTEGER,
ASN1_TIME_print, X509_digest with SHA-1).
"""

from __future__ import annotations

import base64
import datetime
import subprocess
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

from edgeworker.tls.certinfo import cert_vars, format_dn, format_serial, format_time, pem
from tests.support import require_tool

KEY = ec.generate_private_key(ec.SECP256R1())
ISSUER = x509.Name(
    [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test CA, Inc."),
        x509.NameAttribute(NameOID.COMMON_NAME, "Test CA"),
    ]
)
NOW = datetime.datetime(2026, 12, 7, 14, 0, 0, tzinfo=datetime.UTC)
EMAIL = NameOID.EMAIL_ADDRESS
UNKNOWN_OID = x509.ObjectIdentifier("1.2.3.4.5")
DMD_NAME = x509.ObjectIdentifier("2.5.4.54")  # a rare X.520 type OpenSSL knows


def A(oid, value, kind=None):  # noqa: N802 - reads like the Name it builds
    return x509.NameAttribute(oid, value) if kind is None else x509.NameAttribute(oid, value, kind)


def make_cert(
    subject: x509.Name,
    *,
    serial: int = 0x1234ABCD,
    not_before: datetime.datetime = NOW,
    not_after: datetime.datetime = NOW + datetime.timedelta(days=365),
    issuer: x509.Name = ISSUER,
) -> bytes:
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(KEY.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(KEY, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


def openssl_view(der: bytes) -> dict[str, str]:
    """What the openssl CLI prints for the certificate, as the variables' values."""
    openssl = require_tool("openssl", "openssl")
    done = subprocess.run(
        [
            openssl,
            "x509",
            "-inform",
            "DER",
            "-noout",
            "-nameopt",
            "RFC2253",
            "-subject",
            "-issuer",
            "-serial",
            "-fingerprint",
            "-sha1",
            "-startdate",
            "-enddate",
        ],
        input=der,
        capture_output=True,
        timeout=30,
        check=True,
    )
    out = {}
    for line in done.stdout.decode("utf-8").splitlines():
        key, _, value = line.partition("=")
        out[key.lower()] = value
    return {
        "ssl_client_s_dn": out["subject"],
        "ssl_client_i_dn": out["issuer"],
        "ssl_client_serial": out["serial"],
        "ssl_client_fingerprint": out["sha1 fingerprint"].replace(":", "").lower(),
        "ssl_client_v_start": out["notbefore"],
        "ssl_client_v_end": out["notafter"],
    }


def openssl_pem(der: bytes) -> str:
    done = subprocess.run(
        [require_tool("openssl", "openssl"), "x509", "-inform", "DER", "-outform", "PEM"],
        input=der,
        capture_output=True,
        timeout=30,
        check=True,
    )
    return done.stdout.decode("ascii")


AWKWARD = {
    "specials": x509.Name(
        [
            A(NameOID.COUNTRY_NAME, "US"),
            A(NameOID.ORGANIZATION_NAME, 'Doe, "Jane" & Sons; <Ltd> a+b=c \\ d'),
            A(NameOID.COMMON_NAME, "Jane Doe"),
            A(EMAIL, "jane+tag@example.com"),
        ]
    ),
    "spaces and hash": x509.Name(
        [
            A(NameOID.ORGANIZATIONAL_UNIT_NAME, " leading space"),
            A(NameOID.ORGANIZATIONAL_UNIT_NAME, "trailing space "),
            A(NameOID.ORGANIZATIONAL_UNIT_NAME, "#hash first"),
            A(NameOID.ORGANIZATIONAL_UNIT_NAME, "inner # and  spaces"),
            A(NameOID.ORGANIZATIONAL_UNIT_NAME, "#"),
            A(NameOID.ORGANIZATIONAL_UNIT_NAME, " "),
            A(NameOID.ORGANIZATIONAL_UNIT_NAME, "  "),
            A(NameOID.COMMON_NAME, "# x "),
        ]
    ),
    "utf-8": x509.Name(
        [
            A(NameOID.LOCALITY_NAME, "Zoë Straße"),
            A(NameOID.ORGANIZATION_NAME, "東京 株式会社"),
            A(NameOID.COMMON_NAME, "emoji 😀 ok"),
            A(NameOID.ORGANIZATIONAL_UNIT_NAME, "ctl\x01\x1f\x7fend"),
        ]
    ),
    "string types": x509.Name(
        [
            A(NameOID.COUNTRY_NAME, "FR", _ASN1Type.PrintableString),
            A(NameOID.ORGANIZATION_NAME, "BMP Ünïcode €, ok", _ASN1Type.BMPString),
            A(NameOID.ORGANIZATIONAL_UNIT_NAME, "Universal 😀+", _ASN1Type.UniversalString),
            A(NameOID.COMMON_NAME, "Printable (x) = y", _ASN1Type.PrintableString),
            A(EMAIL, "ia5 <box>@example.com", _ASN1Type.IA5String),
            A(NameOID.LOCALITY_NAME, "utf8 type", _ASN1Type.UTF8String),
            A(NameOID.STATE_OR_PROVINCE_NAME, "T61 café", _ASN1Type.T61String),
            A(NameOID.STREET_ADDRESS, "bmp\x00nul\x1f", _ASN1Type.BMPString),
        ]
    ),
    "multi-valued rdn": x509.Name(
        [
            x509.RelativeDistinguishedName([A(NameOID.DOMAIN_COMPONENT, "org")]),
            x509.RelativeDistinguishedName([A(NameOID.DOMAIN_COMPONENT, "example")]),
            x509.RelativeDistinguishedName(
                [
                    A(NameOID.COMMON_NAME, "Multi, Valued"),
                    A(NameOID.USER_ID, "jdoe"),
                    A(EMAIL, "jdoe@example.org"),
                ]
            ),
            x509.RelativeDistinguishedName(
                [A(NameOID.SURNAME, "Doe"), A(NameOID.GIVEN_NAME, "Jane")]
            ),
        ]
    ),
    "unknown and extra oids": x509.Name(
        [
            A(NameOID.SERIAL_NUMBER, "12345"),
            A(UNKNOWN_OID, "opaque, value"),
            A(DMD_NAME, "dmd"),
            A(NameOID.ORGANIZATION_IDENTIFIER, "VATDE-123"),
            A(NameOID.JURISDICTION_COUNTRY_NAME, "DE"),
            A(NameOID.STREET_ADDRESS, "Main St 1"),
            A(NameOID.TITLE, "Dr."),
            A(NameOID.PSEUDONYM, "jd"),
        ]
    ),
    "empty": x509.Name([]),
}


@pytest.mark.parametrize("label", list(AWKWARD))
def test_names_serial_fingerprint_dates_match_openssl(label):
    der = make_cert(AWKWARD[label], issuer=AWKWARD[label] if label != "empty" else ISSUER)
    got = cert_vars(der)
    want = openssl_view(der)
    for key, value in want.items():
        assert got[key] == value, key


@pytest.mark.parametrize(
    "serial",
    [1, 0x7F, 0x80, 0xFF, 0x100, 0x1234ABCD, 2**63, 2**159 - 1, 0x00FF00FF00FF],
)
def test_serial_matches_openssl(serial):
    der = make_cert(AWKWARD["specials"], serial=serial)
    assert cert_vars(der)["ssl_client_serial"] == openssl_view(der)["ssl_client_serial"]


@pytest.mark.filterwarnings("ignore:Parsed a serial number")
@pytest.mark.parametrize("serial", ["-0x81", "-5", "0"])
def test_non_positive_serials_from_the_openssl_cli(tmp_path, serial):
    """RFC 5280 forbids them, clients still send them: written as OpenSSL writes them."""
    openssl = require_tool("openssl", "openssl")
    key, crt = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(crt),
            "-days",
            "1",
            "-subj",
            "/CN=x",
            "-set_serial",
            serial,
        ],
        capture_output=True,
        timeout=60,
        check=True,
    )
    der = base64.b64decode("".join(crt.read_text().splitlines()[1:-1]))
    assert cert_vars(der)["ssl_client_serial"] == openssl_view(der)["ssl_client_serial"]


def test_serial_format_rules():
    assert format_serial(0) == "00"
    assert format_serial(0xABC) == "0ABC"
    assert format_serial(-0x81) == "-81"
    # i2a_ASN1_INTEGER breaks the line after each 35 bytes
    long = format_serial(int("11" * 36, 16))
    assert long == "11" * 35 + "\\\n" + "11"


def test_certificate_made_by_the_openssl_cli(tmp_path):
    """A certificate the openssl CLI made itself (its own string types and encodings)."""
    openssl = require_tool("openssl", "openssl")
    key, crt = tmp_path / "k.pem", tmp_path / "c.pem"
    subject = '/DC=org/DC=example/O=Ex\\, Inc./OU=R&D "lab"/CN=José+UID=jose/emailAddress=j@x.org'
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(crt),
            "-days",
            "30",
            "-utf8",
            "-multivalue-rdn",
            "-subj",
            subject,
            "-set_serial",
            "0xC0FFEE00112233",
        ],
        capture_output=True,
        timeout=60,
        check=True,
    )
    der = x509.load_pem_x509_certificate(crt.read_bytes()).public_bytes(serialization.Encoding.DER)
    got = cert_vars(der)
    want = openssl_view(der)
    for key_name, value in want.items():
        assert got[key_name] == value, key_name
    assert got["ssl_client_s_dn"] == (
        'emailAddress=j@x.org,UID=jose+CN=Jos\\C3\\A9,OU=R&D \\"lab\\",O=Ex\\, Inc.,'
        "DC=example,DC=org"
    )
    assert got["ssl_client_serial"] == "C0FFEE00112233"
    assert got["ssl_client_raw_cert"] == crt.read_text()
    assert got["ssl_client_v_remain"] in ("29", "30")


def test_exact_strings():
    der = make_cert(
        x509.Name(
            [
                x509.RelativeDistinguishedName([A(NameOID.COUNTRY_NAME, "US")]),
                x509.RelativeDistinguishedName(
                    [A(NameOID.COMMON_NAME, "a,b"), A(NameOID.USER_ID, "u")]
                ),
                x509.RelativeDistinguishedName([A(NameOID.ORGANIZATIONAL_UNIT_NAME, " é#")]),
                x509.RelativeDistinguishedName([A(UNKNOWN_OID, "x")]),
            ]
        ),
        serial=0xFF,
        not_before=datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
        not_after=datetime.datetime(2051, 12, 31, 23, 59, 59, tzinfo=datetime.UTC),
    )
    got = cert_vars(der)
    # the DER sorts the multi-valued RDN's members (CN's encoding first); printed last first
    assert got["ssl_client_s_dn"] == "1.2.3.4.5=#0C0178,OU=\\ \\C3\\A9#,UID=u+CN=a\\,b,C=US"
    assert got["ssl_client_i_dn"] == "CN=Test CA,O=Test CA\\, Inc.,C=DE"
    assert got["ssl_client_serial"] == "FF"
    assert got["ssl_client_v_start"] == "Jan  2 03:04:05 2026 GMT"
    assert got["ssl_client_v_end"] == "Dec 31 23:59:59 2051 GMT"


def test_pem_forms_match_nginx():
    der = make_cert(AWKWARD["utf-8"])
    got = cert_vars(der)
    raw = got["ssl_client_raw_cert"]
    assert raw == openssl_pem(der) == pem(der)
    lines = raw.splitlines()
    assert lines[0] == "-----BEGIN CERTIFICATE-----" and lines[-1] == "-----END CERTIFICATE-----"
    assert all(len(line) == 64 for line in lines[1:-2]) and 0 < len(lines[-2]) <= 64
    assert base64.b64decode("".join(lines[1:-1])) == der
    # nginx's $ssl_client_cert: no final newline, a tab at the start of every further line
    assert got["ssl_client_cert"] == "\n\t".join(lines)
    assert "\n" + raw[:-1].replace("\n", "\n\t") == "\n" + got["ssl_client_cert"]


def test_fingerprint_is_sha1_of_der_lowercase():
    import hashlib

    der = make_cert(AWKWARD["specials"])
    fp = cert_vars(der)["ssl_client_fingerprint"]
    assert fp == hashlib.sha1(der).hexdigest() and fp == fp.lower() and len(fp) == 40  # noqa: S324


@pytest.mark.parametrize(
    ("seconds_left", "days"),
    [
        (-86400 * 3, "0"),
        (0, "0"),
        (86399, "0"),
        (86400, "1"),
        (86400 * 10 + 5, "10"),
        (86400 * 400 - 1, "399"),
    ],
)
def test_v_remain_counts_whole_days_like_nginx(seconds_left, days):
    end = NOW + datetime.timedelta(seconds=seconds_left)
    start = NOW - datetime.timedelta(days=10)
    der = make_cert(AWKWARD["specials"], not_before=start, not_after=end)
    assert cert_vars(der, now=NOW.timestamp())["ssl_client_v_remain"] == days


def test_v_remain_defaults_to_the_clock():
    end = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=7, hours=1)
    der = make_cert(
        AWKWARD["specials"], not_before=NOW - datetime.timedelta(days=400), not_after=end
    )
    assert cert_vars(der)["ssl_client_v_remain"] == "7"


def test_times_and_generalized_time_dates():
    assert format_time(datetime.datetime(2026, 12, 7, 14, 0, 0)) == "Dec  7 14:00:00 2026 GMT"
    far = datetime.datetime(2060, 2, 29, 0, 0, 1, tzinfo=datetime.UTC)  # GeneralizedTime
    der = make_cert(AWKWARD["specials"], not_after=far)
    got = cert_vars(der)
    assert got["ssl_client_v_end"] == "Feb 29 00:00:01 2060 GMT"
    assert got["ssl_client_v_end"] == openssl_view(der)["ssl_client_v_end"]


def test_keys():
    got = cert_vars(make_cert(AWKWARD["specials"]))
    assert set(got) == {
        "ssl_client_s_dn",
        "ssl_client_i_dn",
        "ssl_client_serial",
        "ssl_client_fingerprint",
        "ssl_client_cert",
        "ssl_client_raw_cert",
        "ssl_client_v_start",
        "ssl_client_v_end",
        "ssl_client_v_remain",
    }
    assert all(isinstance(v, str) for v in got.values())


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"not a certificate",
        b"\x30\x03\x02\x01\x01",
        b"\x30\x82\xff\xff" + b"\x00" * 10,
    ],
)
def test_garbage_raises_value_error(bad):
    with pytest.raises(ValueError, match="client certificate is not a DER X.509 certificate"):
        cert_vars(bad)


def test_truncated_and_pem_input_raise_value_error():
    der = make_cert(AWKWARD["specials"])
    with pytest.raises(ValueError, match="not a DER X.509 certificate"):
        cert_vars(der[:-10])
    with pytest.raises(ValueError, match="not a DER X.509 certificate"):
        cert_vars(pem(der).encode())
    with pytest.raises(ValueError, match="expected DER bytes, got str"):
        cert_vars(pem(der))  # type: ignore[arg-type]


def test_accepts_bytearray_and_memoryview():
    der = make_cert(AWKWARD["specials"])
    assert cert_vars(bytearray(der)) == cert_vars(memoryview(der)) == cert_vars(der)


def test_format_dn_rejects_malformed_names():
    with pytest.raises(ValueError):
        format_dn(b"\x31\x00")
    with pytest.raises(ValueError):
        format_dn(b"\x30\x05\x31\x03\x30\x01")
    assert format_dn(b"\x30\x00") == ""


def test_fast_enough_for_every_connection():
    der = make_cert(AWKWARD["multi-valued rdn"])
    cert_vars(der)
    n = 200
    t0 = time.perf_counter()
    for _ in range(n):
        cert_vars(der)
    per_call = (time.perf_counter() - t0) / n
    assert per_call < 0.005, f"{per_call * 1e6:.0f} us per call"
