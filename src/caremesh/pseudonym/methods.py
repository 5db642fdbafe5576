"""Value transforms of the anonymizer methods: date shift, partial redaction, hashing, encryption.

Each follows FHIR-Tools-for-Anonymization's documented algorithms (FHIR documentation,
"Data anonymization algorithms") as restated in DESIGN §6; the `patient` date-shift scope is
a caremesh extension. Functions take and return plain values; they never log and their
errors carry no input.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable
from datetime import date

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from caremesh.randomness import random_bytes

DATE_TYPES = frozenset({"date", "dateTime", "instant"})
INTEGER_TYPES = frozenset({"integer", "positiveInt", "unsignedInt", "integer64"})
NUMERIC_TYPES = INTEGER_TYPES | {"decimal"}
AGE_THRESHOLD = 89
SHIFT_RANGE = 50

_DATE_TIME = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?P<time>T(?P<clock>\d{2}(?::\d{2}(?::\d{2}(?:\.\d+)?)?)?)(?P<zone>Z|[+-]\d{2}:\d{2})?)?"
    r")?)?$"
)
_ZONED_DATE = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:Z|[+-]\d{2}:\d{2})$")
_DIGIT = re.compile(r"\d")
_ZEROES = str.maketrans("123456789", "000000000")
_REFERENCE = re.compile(
    r"^(?P<prefix>(?:https?://[A-Za-z0-9\\/.:%$-]*/)?[A-Z][A-Za-z]+/)"
    r"(?P<id>[A-Za-z0-9\-.]{1,64})(?P<suffix>/_history/[A-Za-z0-9\-.]{1,64})?$"
)
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_URN = re.compile(r"^(?P<prefix>urn:(?:uuid|oid):)(?P<id>.+)$")


class TransformError(Exception):
    """A value could not be transformed; `code` says why (no value is carried)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def resource_scope_offset(prefix: str, key: str) -> int:
    """Upstream's date-shift amount: fold of UTF-8(prefix+key) with o = (o*131 + b) mod 101, -50."""
    offset = 0
    for byte in (prefix + key).encode("utf-8"):
        offset = (offset * 131 + byte) % (2 * SHIFT_RANGE + 1)
    return offset - SHIFT_RANGE


def patient_scope_offset(patient_key: str, key: str) -> int:
    """caremesh extension: HMAC-SHA256(key, patient key) mapped to [-50, +50] days."""
    digest = hmac.new(key.encode("utf-8"), patient_key.encode("utf-8"), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") % (2 * SHIFT_RANGE + 1) - SHIFT_RANGE


def parse_date(text: str) -> re.Match[str]:
    """Match a FHIR date/dateTime/instant, or raise TransformError. A full date with a zone
    and no time (`2001-01-01Z`, which .NET's parser accepts) reads as the date: upstream
    shifts it to a plain date."""
    zoned = _ZONED_DATE.match(text)
    match = _DATE_TIME.match(zoned.group(1) if zoned else text)
    if match is None:
        raise TransformError("invalid-date")
    return match


def over_age_threshold(match: re.Match[str], today: date) -> bool:
    """Whether a date indicates an age over 89 on `today` (missing month/day count as 1)."""
    year = int(match["y"])
    if today.year - year <= AGE_THRESHOLD:
        return False
    month = int(match["m"] or 1)
    day = int(match["d"] or 1)
    age = today.year - year - (1 if (today.month, today.day) < (month, day) else 0)
    return age > AGE_THRESHOLD


def redact_date(text: str, partial: bool, today: date) -> str | None:
    """Redact a date: None, or only its year when partial dates are on (None if over 89)."""
    if not partial:
        return None
    match = parse_date(text)
    return None if over_age_threshold(match, today) else match["y"]


def shift_date(text: str, offset: int, partial: bool, today: date) -> tuple[str | None, bool]:
    """(new value, shifted?) — a partial date or one indicating age over 89 is redacted."""
    match = parse_date(text)
    if match["d"] is None or over_age_threshold(match, today):
        return redact_date(text, partial, today), False
    try:
        day = date(int(match["y"]), int(match["m"]), int(match["d"]))
        shifted = date.fromordinal(day.toordinal() + offset).isoformat()
    except (ValueError, OverflowError):
        raise TransformError("invalid-date") from None
    if match["time"] is None:
        return shifted, True
    clock = match["clock"].translate(_ZEROES)
    return f"{shifted}T{clock}{match['zone'] or ''}", True


def redact_age(value: object, partial: bool) -> object | None:
    """Redact an Age value: kept when partial ages are on and it is at most 89."""
    if not partial:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TransformError("invalid-age")
    return None if value > AGE_THRESHOLD else value


def redact_postal_code(text: str, restricted: tuple[str, ...]) -> str:
    """HIPAA-style partial zip: first 3 characters kept, later digits zeroed (all if restricted)."""
    if any(text.startswith(area) for area in restricted):
        return _DIGIT.sub("0", text)
    if len(text) >= 3:
        return text[:3] + _DIGIT.sub("0", text[3:])
    return text


def hasher(key: str) -> Callable[[str], str]:
    """HMAC-SHA256 with the UTF-8 key, as 64 lowercase hex characters."""
    base = hmac.new(key.encode("utf-8"), digestmod=hashlib.sha256)

    def digest(value: str) -> str:
        mac = base.copy()
        mac.update(value.encode("utf-8"))
        return mac.hexdigest()

    return digest


def transform_reference(reference: str, transform: Callable[[str], str]) -> str:
    """Apply `transform` to the id part of a literal reference, else to the whole value."""
    if reference.startswith("#"):
        return "#" + transform(reference[1:])
    kind, slash, ident = reference.partition("/")
    if slash and kind.isalpha() and kind[:1].isupper() and _ID.match(ident):
        return f"{kind}/{transform(ident)}"  # the common relative form, without the big regex
    match = _REFERENCE.match(reference) or _URN.match(reference)
    if match is None:
        return transform(reference)
    suffix = match.groupdict().get("suffix") or ""
    return f"{match['prefix']}{transform(match['id'])}{suffix}"


def valid_aes_key(key: str) -> bool:
    """Whether the UTF-8 bytes of a key are an AES-128/192/256 key."""
    return len(key.encode("utf-8")) in (16, 24, 32)


def encrypter(key: str) -> Callable[[str], str]:
    """AES-CBC, random IV, PKCS7: base64(IV ‖ ciphertext) of the UTF-8 value."""
    material = key.encode("utf-8")
    algorithm = algorithms.AES(material)

    def encrypt(value: str) -> str:
        iv = random_bytes(16)
        padder = padding.PKCS7(128).padder()
        data = padder.update(value.encode("utf-8")) + padder.finalize()
        encryptor = Cipher(algorithm, modes.CBC(iv)).encryptor()
        return base64.b64encode(iv + encryptor.update(data) + encryptor.finalize()).decode()

    return encrypt


def decrypt(key: str, text: str) -> str:
    """The inverse of `encrypter` (for re-identification by key holders, and tests)."""
    raw = base64.b64decode(text)
    if len(raw) < 32:
        raise TransformError("invalid-ciphertext")
    decryptor = Cipher(algorithms.AES(key.encode("utf-8")), modes.CBC(raw[:16])).decryptor()
    padded = decryptor.update(raw[16:]) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    return (unpadder.update(padded) + unpadder.finalize()).decode("utf-8")


def perturb_number(
    value: object, span: float, proportional: bool, round_to: int, noise: Callable[[float], float]
) -> int | float:
    """Add uniform noise within ±span/2 (*|value| when proportional), rounded to `round_to`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TransformError("not-a-number")
    width = span * abs(value) if proportional else span
    result = round(value + noise(width / 2), round_to)
    return int(result) if round_to == 0 else result
