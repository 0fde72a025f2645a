# ruff: noqa: RUF001 -- full-width punctuation in Chinese text is what this file is about
"""Offline detectors of personal data in text: regular expressions, checksums and cue words.

Kinds, in the order they claim text (an earlier kind wins an overlap):

- ``email``: ``local@domain.tld``.
- ``ipv6``, ``ipv4``: addresses that parse (``ipaddress``); loopback, unspecified, broadcast and
  netmask-looking addresses are left alone, and so is a dotted quad right after "version"/"版本".
- ``cn_id``: Chinese resident identity numbers, 18 characters: a real province code, a valid birth
  date not in the future, and the ISO 7064 MOD 11-2 check character (0-9 or X).
- ``bank_card``: 13-19 digits, plain or in groups of four (or 4-6-5), passing the Luhn check, with
  a card network's prefix and length (Visa, Mastercard, Amex, UnionPay, Discover, JCB, Diners,
  Maestro) or right after a card cue ("card", "卡号", "银行卡"...).
- ``phone``: Chinese mobiles (1[3-9] + 9 digits, with +86/0086 and space or hyphen separators),
  Chinese landlines (area code 0xx/0xxx, local number starting 2-9, optional parentheses or
  separators), international numbers written with ``+`` (8-15 digits in groups), and North American
  numbers written with separators ("(415) 555-2671", "415-555-2671"). A bare number right after an
  order/invoice/tracking cue ("订单号", "order no.") is an identifier, not a phone.
- ``person``: a modest, rule-based name detector (see ``_names``).

Numbers are only taken whole: never a digit run glued to letters, a decimal point, a hyphenated
identifier (``ORD-2024-000123``), a path or a date.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from datapilot.privacy._names import find_names

EMAIL = "email"
PHONE = "phone"
CN_ID = "cn_id"
BANK_CARD = "bank_card"
IPV4 = "ipv4"
IPV6 = "ipv6"
PERSON = "person"

# The order in which kinds claim text.
KINDS: tuple[str, ...] = (EMAIL, IPV6, IPV4, CN_ID, BANK_CARD, PHONE, PERSON)
STRUCTURED_KINDS: tuple[str, ...] = (EMAIL, PHONE, CN_ID, BANK_CARD, IPV4, IPV6)


@dataclass(slots=True, frozen=True)
class Span:
    """One detected value: ``text[start:end] == value``."""

    kind: str
    start: int
    end: int
    value: str


# --- checksums and validators -----------------------------------------------------------------------

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
_PROVINCES = frozenset(
    {11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46}
    | {50, 51, 52, 53, 54, 61, 62, 63, 64, 65, 71, 81, 82, 83}
)


def cn_id_check_char(first17: str) -> str:
    """The ISO 7064 MOD 11-2 check character of the first 17 digits of a Chinese ID number."""
    return _ID_CHECK[sum(int(c) * w for c, w in zip(first17, _ID_WEIGHTS, strict=True)) % 11]


def valid_cn_id(number: str, today: _dt.date | None = None) -> bool:
    """18 characters: province code, birth date (valid, 1900 on, not in the future), check character."""
    if len(number) != 18 or not number[:17].isdigit():
        return False
    if int(number[:2]) not in _PROVINCES:
        return False
    try:
        born = _dt.date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return False
    if born.year < 1900 or born > (today or _dt.date.today()):
        return False
    return cn_id_check_char(number[:17]) == number[17].upper()


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = ord(c) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def luhn_check_digit(partial: str) -> str:
    """The digit that makes ``partial + digit`` pass the Luhn check."""
    for d in "0123456789":
        if luhn_ok(partial + d):
            return d
    raise AssertionError("unreachable")


def card_network_ok(d: str) -> bool:
    """Whether ``d`` has a card network's prefix (IIN) and one of that network's lengths. 17 and 18
    digits are left out: almost no card has them, and 18 digits is the length of an ID number."""
    n = len(d)
    if n in (17, 18):
        return False
    p2, p3, p4 = int(d[:2]), int(d[:3]), int(d[:4])
    if d[0] == "4":  # Visa (13-digit Visa is obsolete, and that length is mostly EAN-13 barcodes)
        return n in (16, 19)
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:  # Mastercard
        return n == 16
    if p2 in (34, 37):  # Amex
        return n == 15
    if p2 in (62, 81):  # UnionPay
        return 16 <= n <= 19
    if p4 == 6011 or p2 == 65 or 644 <= p3 <= 649:  # Discover
        return 16 <= n <= 19
    if 3528 <= p4 <= 3589:  # JCB
        return 16 <= n <= 19
    if 300 <= p3 <= 305 or p2 in (36, 38, 39) or p4 == 3095:  # Diners
        return 14 <= n <= 19
    if p2 in (50, 56, 57, 58, 67):  # Maestro
        return 16 <= n <= 19
    return False


# --- patterns ---------------------------------------------------------------------------------------

# A number starts where it is not glued to an identifier, a decimal, a path, a date or a sign.
_NUM_START = r"(?<![0-9A-Za-z_.\-/+])"
# ... and ends where no letter or digit follows, nor a separator that goes on with another digit.
_NUM_END = r"(?![0-9A-Za-z_]|[.\-/][0-9])"

_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9][A-Za-z0-9._%+\-]*@(?:[A-Za-z0-9\-]+\.)+[A-Za-z]{2,24}(?![A-Za-z0-9\-])"
)

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![0-9A-Za-z_.\-])(?:{_OCTET}\.){{3}}{_OCTET}(?![0-9A-Za-z_\-]|\.\d)")
_IPV6 = re.compile(
    r"(?<![0-9A-Za-z_:.\-])(?=[0-9A-Fa-f]*:[0-9A-Fa-f]*:)[0-9A-Fa-f:]{2,39}(?:\.\d{1,3}){0,3}(?![0-9A-Za-z_])"
)

_CN_ID = re.compile(
    r"(?<![0-9A-Za-z_])([1-9]\d{5})( ?)"  # region (an optional space between the groups, the same each time)
    r"((?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01]))"  # birth date
    r"\2(\d{3}[0-9Xx])(?![0-9A-Za-z_])"  # sequence and check character
)

_CARD = re.compile(
    _NUM_START
    + r"(?:\d{13,19}"  # plain
    + r"|\d{4}([ \-])\d{4}\1\d{4}\1\d{1,4}(?:\1\d{1,3})?"  # 4-4-4-4(-3)
    + r"|\d{4}([ \-])\d{6}\2\d{4,5})"  # 4-6-5 (Amex), 4-6-4 (Diners)
    + r"(?![0-9A-Za-z_])"
)

_SEP = r"[ \-]?"
_PHONE = re.compile(
    _NUM_START
    + r"(?<![ \-]\d{4}[ \-])"  # not the middle of a longer run of 4-digit groups (a card, a reference)
    + "(?:"
    # Chinese mobile, optionally with +86 / 0086 / (+86)
    + rf"(?:(?:\+|00)86{_SEP}|\(\+?86\) ?)?1[3-9]\d(?:{_SEP}\d{{4}}){{2}}|1[3-9]\d\.\d{{4}}\.\d{{4}}"
    # Chinese landline with its area code: (010) / 010- / +86 10
    + rf"|(?:\(0(?:10|2\d|[3-9]\d\d)\) ?|0(?:10|2\d|[3-9]\d\d){_SEP}|\+86{_SEP}(?:10|2\d|[3-9]\d\d){_SEP})"
    + rf"[2-9]\d{{2,3}}{_SEP}\d{{4}}"
    # North American with +1, then any other +CC number in groups
    + r"|\+1[ \-.]?(?:\([2-9]\d\d\)|[2-9]\d\d)[ \-.]?[2-9]\d\d[ \-.]?\d{4}"
    + r"|\+[1-9]\d{7,14}|\+[1-9]\d{0,3}(?:[ \-.]?\(\d{1,4}\))?(?:[ \-.]\d{1,8}){1,5}"
    # North American without a country code, only with its separators
    + r"|\([2-9]\d\d\) ?[2-9]\d\d[\-. ]\d{4}|(?:1[\-.])?[2-9]\d\d([\-.])[2-9]\d\d\1\d{4}"
    + ")"
    + _NUM_END
)

# A bare number right after one of these is an identifier (order, invoice...), not a phone.
_ID_CUE = re.compile(
    r"(?:\b(?i:order|invoice|tracking|sku|ticket|serial|transaction|txn|batch|shipment|waybill|po)"
    r"(?:[ _\-]?(?i:no\.?|num(?:ber)?|id|#|code))?\s*(?:[:#=]|(?i:is))?\s*['\"]?"
    r"|(?:订单|单号|编号|流水|工单|运单|快递单|批次|序列|合同|发票)[号码]*\s*[:：#]?\s*(?:是|为)?\s*)$"
)
_CARD_CUE = re.compile(
    r"(?:\b(?i:card|credit card|debit card|card number|card no\.?|account|acct)\s*(?:[:#=]|(?i:is))?\s*"
    r"|(?:卡号|银行卡|信用卡|借记卡|储蓄卡|账号|帐号|卡)[号码]*\s*[:：]?\s*(?:是|为)?\s*)$"
)
_VERSION_CUE = re.compile(
    r"(?:\b(?i:version|ver|release|build|firmware|v)\.?\s*[:=]?\s*|版本[号]?\s*[:：]?\s*(?:是|为)?\s*)$"
)
_CUE_WINDOW = 24


def _after(text: str, start: int, cue: re.Pattern[str]) -> bool:
    return cue.search(text, max(0, start - _CUE_WINDOW), start) is not None


# --- detectors: each yields candidate spans -----------------------------------------------------------


def _emails(text: str) -> Iterator[Span]:
    if "@" not in text:
        return
    for m in _EMAIL.finditer(text):
        yield Span(EMAIL, m.start(), m.end(), m.group())


def _ipv4s(text: str) -> Iterator[Span]:
    for m in _IPV4.finditer(text):
        value = m.group()
        first = int(value.split(".", 1)[0])
        if first in (0, 127, 255) or _after(text, m.start(), _VERSION_CUE):
            continue
        yield Span(IPV4, m.start(), m.end(), value)


def _ipv6s(text: str) -> Iterator[Span]:
    if ":" not in text:
        return
    for m in _IPV6.finditer(text):
        value, end = m.group(), m.end()
        if value.endswith(":") and not value.endswith("::"):
            value, end = value[:-1], end - 1  # "IP: fe80::1:" — the colon ends the sentence
        if not any(c.isdigit() for c in value):
            continue  # "dead::beef", "add::face": words in code, not addresses
        try:
            addr = ipaddress.IPv6Address(value)
        except ValueError:
            continue
        if addr.is_loopback or addr.is_unspecified:
            continue
        yield Span(IPV6, m.start(), end, value)


def _cn_ids(text: str) -> Iterator[Span]:
    for m in _CN_ID.finditer(text):
        number = m.group(1) + m.group(3) + m.group(4)
        if valid_cn_id(number):
            yield Span(CN_ID, m.start(), m.end(), m.group())


def _cards(text: str) -> Iterator[Span]:
    for m in _CARD.finditer(text):
        digits = "".join(c for c in m.group() if c.isdigit())
        if not 13 <= len(digits) <= 19 or not luhn_ok(digits):
            continue
        if card_network_ok(digits) or _after(text, m.start(), _CARD_CUE):
            yield Span(BANK_CARD, m.start(), m.end(), m.group())


def _phones(text: str) -> Iterator[Span]:
    for m in _PHONE.finditer(text):
        value = m.group()
        if value.startswith("+"):
            # "+44 20 7946 0958 2024": E.164 has at most 15 digits, so trailing groups are not the number
            while sum(c.isdigit() for c in value) > 15 and (cut := max(map(value.rfind, " -."))) > 0:
                value = value[:cut]
            if not 8 <= sum(c.isdigit() for c in value) <= 15:
                continue
        elif value.isdigit() and _after(text, m.start(), _ID_CUE):
            continue  # "订单号 13812345678": an order number that looks like a mobile
        yield Span(PHONE, m.start(), m.start() + len(value), value)


def _persons(text: str) -> Iterator[Span]:
    for start, end in find_names(text):
        yield Span(PERSON, start, end, text[start:end])


_DETECTORS: dict[str, Callable[[str], Iterator[Span]]] = {
    EMAIL: _emails,
    IPV6: _ipv6s,
    IPV4: _ipv4s,
    CN_ID: _cn_ids,
    BANK_CARD: _cards,
    PHONE: _phones,
    PERSON: _persons,
}
_DIGIT = re.compile(r"\d")
_NEEDS_DIGIT = frozenset({IPV4, CN_ID, BANK_CARD, PHONE})


# Full-width forms (U+FF01-U+FF5E: the digits, letters and signs that Chinese input methods type) are
# read as their ASCII twins, one character for one, so spans keep their positions in the original text.
_HALF_WIDTH = {cp: cp - 0xFEE0 for cp in range(0xFF01, 0xFF5F)}
_FULL_WIDTH = re.compile("[\uff01-\uff5e]")


def detect(text: str, kinds: Iterable[str] | None = None) -> list[Span]:
    """Personal data found in ``text``: non-overlapping spans in text order. ``kinds`` limits the
    search (default: every kind in ``KINDS``); an earlier kind in ``KINDS`` wins an overlap."""
    wanted = KINDS if kinds is None else tuple(k for k in KINDS if k in set(kinds))
    unknown = set(kinds or ()) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown kinds of personal data: {sorted(unknown)}; known: {list(KINDS)}")
    read = text.translate(_HALF_WIDTH) if _FULL_WIDTH.search(text) else text
    has_digit = _DIGIT.search(read) is not None
    taken: list[Span] = []
    for kind in wanted:
        if kind in _NEEDS_DIGIT and not has_digit:
            continue
        for span in _DETECTORS[kind](read):
            if not any(span.start < t.end and t.start < span.end for t in taken):
                taken.append(span if read is text else Span(kind, span.start, span.end, text[span.start : span.end]))
    taken.sort(key=lambda s: s.start)
    return taken
