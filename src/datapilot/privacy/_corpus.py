# ruff: noqa: RUF001 -- full-width punctuation in Chinese text is what this file is about
"""A seeded generator of labelled English and Chinese texts, for measuring the detectors.

Every text mixes sentences that carry personal data of known kind and position with sentences that
must not be masked: SQL with numbers, order ids and order numbers (that fail the Luhn and ID checks),
prices, dates, times, version strings, timestamps, barcodes. ``evaluate`` scores a detector on them:
a detected span counts as right only with the exact kind and boundaries.
"""

from __future__ import annotations

import ipaddress
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from datapilot.privacy._detect import (
    BANK_CARD,
    CN_ID,
    EMAIL,
    IPV4,
    IPV6,
    KINDS,
    PERSON,
    PHONE,
    Span,
    cn_id_check_char,
    detect,
    luhn_check_digit,
    luhn_ok,
)


@dataclass(slots=True, frozen=True)
class LabeledText:
    text: str
    lang: str  # en, zh
    spans: tuple[tuple[str, int, int], ...]  # (kind, start, end) of each planted value

    def values(self) -> list[tuple[str, str]]:
        return [(kind, self.text[start:end]) for kind, start, end in self.spans]


# --- values -------------------------------------------------------------------------------------------

_FIRST = (
    "James Mary John Patricia Robert Jennifer Michael Linda David Elizabeth William Susan Richard Jessica "
    "Thomas Sarah Daniel Karen Emily Olivia"
).split()
_LAST = (
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Wilson Anderson Taylor Thomas Moore Martin "
    "Jackson Thompson White Harris Clark Lewis McDonald O'Brien"
).split()
_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程苏魏吕丁任沈姚卢"
_COMPOUND = ["欧阳", "司马", "诸葛", "上官"]
_GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛超秀霞平刚桂英华建国红玉兰志明晓宇浩然子轩欣怡梓涵俊杰思远雨萱"
_DOMAINS = ["example.com", "163.com", "qq.com", "gmail.com", "corp.example.cn", "mail.example.co.uk", "outlook.com"]
_WORDS = ["sales", "info", "dev", "ops", "admin", "hr", "finance", "support", "team", "data"]
_PROVINCES = [11, 12, 13, 31, 32, 33, 35, 37, 41, 42, 44, 50, 51, 53, 61, 62, 65]


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def _email(rng: random.Random, lang: str) -> str:
    first, last = rng.choice(_FIRST).lower(), rng.choice(_LAST).lower().replace("'", "")
    local = rng.choice(
        [
            f"{first}.{last}",
            f"{first}{rng.randint(1, 999)}",
            f"{first[0]}{last}",
            f"{rng.choice(_WORDS)}+{rng.choice(_WORDS)}",
            f"{first}_{last}{rng.randint(70, 99)}",
            _digits(rng, rng.randint(6, 10)).lstrip("0") or "123456",
        ]
    )
    return f"{local}@{rng.choice(_DOMAINS)}"


def _full_width(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def _cn_mobile(rng: random.Random) -> str:
    return "1" + rng.choice("3456789") + _digits(rng, 9)


def _phone(rng: random.Random, lang: str) -> str:
    m = _cn_mobile(rng)
    if lang == "zh" and rng.random() < 0.05:
        return _full_width(m)  # typed with a Chinese input method
    local8 = str(rng.randint(2, 8)) + _digits(rng, 7)
    local7 = str(rng.randint(2, 8)) + _digits(rng, 6)
    area = rng.choice(["0571", "0755", "0512", "0871", "0351"])
    return rng.choice(
        [
            m,
            m,
            f"{m[:3]} {m[3:7]} {m[7:]}",
            f"{m[:3]}-{m[3:7]}-{m[7:]}",
            f"+86 {m[:3]} {m[3:7]} {m[7:]}",
            f"+86-{m}",
            f"+86{m}",
            f"0086 {m}",
            f"010-{local8}",
            f"(021) {local8[:4]} {local8[4:]}",
            f"{area}-{local7}",
            f"{area}-{local8}",
            f"+1 {rng.randint(201, 989)} {rng.randint(201, 989)} {_digits(rng, 4)}",
            f"+1 ({rng.randint(201, 989)}) {rng.randint(201, 989)}-{_digits(rng, 4)}",
            f"+44 20 {_digits(rng, 4)} {_digits(rng, 4)}",
            f"+49 30 {_digits(rng, 6)}",
            f"+81 3-{_digits(rng, 4)}-{_digits(rng, 4)}",
            f"+33 1 {' '.join(_digits(rng, 2) for _ in range(4))}",
            f"+65 {rng.randint(6, 9)}{_digits(rng, 3)} {_digits(rng, 4)}",
            f"({rng.randint(201, 989)}) {rng.randint(201, 989)}-{_digits(rng, 4)}",
            f"{rng.randint(201, 989)}-{rng.randint(201, 989)}-{_digits(rng, 4)}",
        ]
    )


def _cn_id(rng: random.Random, lang: str) -> str:
    born = f"{rng.randint(1950, 2005)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
    first17 = f"{rng.choice(_PROVINCES)}{rng.randint(1, 99):02d}{rng.randint(1, 99):02d}{born}{_digits(rng, 3)}"
    return first17 + cn_id_check_char(first17)


def _card_digits(rng: random.Random) -> str:
    prefix, length = rng.choice(
        [("4", 16), ("4", 16), ("51", 16), ("53", 16), ("55", 16), ("62", 16), ("62", 19), ("6222", 19), ("37", 15)]
    )
    body = prefix + _digits(rng, length - len(prefix) - 1)
    return body + luhn_check_digit(body)


def _card(rng: random.Random, lang: str) -> str:
    d = _card_digits(rng)
    if len(d) == 15:
        sep = rng.choice(["", " ", "-"])
        return f"{d[:4]}{sep}{d[4:10]}{sep}{d[10:]}"
    sep = rng.choice(["", "", " ", "-"])
    return sep.join(d[i : i + 4] for i in range(0, len(d), 4))


def _ipv4(rng: random.Random, lang: str) -> str:
    return rng.choice(
        [
            f"192.168.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
            f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
            f"172.{rng.randint(16, 31)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
            f"{rng.choice([8, 23, 45, 61, 101, 114, 203, 220])}.{rng.randint(0, 255)}.{rng.randint(0, 255)}"
            f".{rng.randint(1, 254)}",
        ]
    )


def _ipv6(rng: random.Random, lang: str) -> str:
    while True:
        prefix = rng.choice([0x20010DB8, 0x24008000, 0x2A001450, 0xFE800000])
        low = rng.getrandbits(96) if rng.random() < 0.5 else rng.getrandbits(16)
        addr = ipaddress.IPv6Address((prefix << 96) | low)
        text = addr.exploded if rng.random() < 0.2 else str(addr)
        if any(c.isdigit() for c in text):
            return text


def _person(rng: random.Random, lang: str) -> str:
    if lang == "en":
        return f"{rng.choice(_FIRST)} {rng.choice(_LAST)}" if rng.random() < 0.8 else rng.choice(_FIRST)
    surname = rng.choice(_COMPOUND) if rng.random() < 0.1 else rng.choice(_SURNAMES)
    return surname + "".join(rng.choice(_GIVEN) for _ in range(rng.choice([1, 2, 2])))


_VALUES: dict[str, Callable[[random.Random, str], str]] = {
    EMAIL: _email,
    PHONE: _phone,
    CN_ID: _cn_id,
    BANK_CARD: _card,
    IPV4: _ipv4,
    IPV6: _ipv6,
    PERSON: _person,
}

# --- sentences ----------------------------------------------------------------------------------------

_TEMPLATES: dict[str, dict[str, list[str]]] = {
    EMAIL: {
        "en": [
            "Please send the report to {v}.",
            "My email is {v}",
            "Contact: {v} (weekdays only).",
            "cc {v} on the thread, thanks.",
            "SELECT * FROM users WHERE email = '{v}';",
        ],
        "zh": ["我的邮箱是{v}，请查收。", "请发邮件到 {v} 。", "邮箱：{v}", "把报表抄送给{v}，谢谢！"],
    },
    PHONE: {
        "en": [
            "Call me at {v}.",
            "My phone number is {v}, any time after 6pm.",
            "phone: {v}",
            "UPDATE customers SET phone = '{v}' WHERE id = 42;",
        ],
        "zh": [
            "我的手机号是{v}，随时联系。",
            "电话：{v}",
            "有问题请拨打 {v} 找我。",
            "联系方式{v}（微信同号）",
            "手机{v}请回电。",
        ],
    },
    CN_ID: {
        "en": ["ID number {v} was verified.", "Her Chinese ID is {v}.", "INSERT INTO kyc VALUES ('{v}', 'ok');"],
        "zh": ["身份证号：{v}", "我的身份证号码是{v}。", "请核对证件号 {v} 是否正确。", "身份证{v}已实名"],
    },
    BANK_CARD: {
        "en": ["Charge my card {v} please.", "card number: {v}", "The payment with {v} failed yesterday."],
        "zh": ["银行卡号 {v}", "请退款到卡号{v}。", "我用{v}这张卡付的款。"],
    },
    IPV4: {
        "en": ["The login came from {v} at night.", "Server {v}:8080 is down.", "client ip={v}, status=403"],
        "zh": ["登录IP：{v}", "来自{v}的访问被拦截了。", "服务器地址是 {v}，端口 22。"],
    },
    IPV6: {
        "en": ["The client address was {v}.", "ping6 {v} times out.", "Blocked {v} after 5 attempts."],
        "zh": ["IPv6地址是{v}。", "来自 {v} 的请求异常。"],
    },
    PERSON: {
        "en": [
            "My name is {v}.",
            "Please forward this to Dr. {v} today.",
            "Dear {v},",
            "Name: {v}",
            "Regards,\n{v}",
            "Hi, I'm {v2} from the data team.",
            "Ask Ms. {v} about the refund.",
        ],
        "zh": [
            "我叫{v}，在杭州工作。",
            "姓名：{v}",
            "联系人：{v}，电话稍后给你。",
            "{v}先生您好，",
            "收件人：{v}",
            "客户{v}的订单已发货。",
        ],
    },
}


def _order_number(rng: random.Random, low: int = 8, high: int = 12) -> str:
    """8-12 digits, starting 2-9, failing the Luhn check: an order number, not a card or a phone."""
    n = str(rng.randint(2, 9)) + _digits(rng, rng.randint(low, high) - 1)
    return n if not luhn_ok(n) else n[:-1] + str((int(n[-1]) + 1) % 10)


def _bad_card(rng: random.Random) -> str:
    """A card-shaped number with a wrong Luhn digit."""
    d = _card_digits(rng)
    return d[:-1] + str((int(d[-1]) + rng.randint(1, 9)) % 10)


def _bad_id(rng: random.Random) -> str:
    """An ID-shaped number with a wrong check character, or an impossible birth date."""
    good = _cn_id(rng, "zh")
    if rng.random() < 0.5:
        return good[:17] + rng.choice([c for c in "0123456789X" if c != good[17]])
    first17 = good[:10] + "1332" + good[14:17]  # 13th month, 32nd day
    return first17 + cn_id_check_char(first17)


def _negative(rng: random.Random, lang: str) -> str:
    """A sentence with numbers and identifiers that are not personal data."""
    year = rng.randint(2015, 2025)
    month, day = rng.randint(1, 12), rng.randint(1, 28)
    amount = rng.choice([100, 500, 1000, 2500, 10000, 99999])
    mobile_like = _cn_mobile(rng)
    no_luhn16 = _order_number(rng, 16, 16)
    en = [
        f"SELECT name, amount FROM orders WHERE amount > {amount} AND created_at >= '{year}-{month:02d}-{day:02d}' "
        f"ORDER BY amount DESC LIMIT {rng.randint(5, 100)};",
        f"SELECT COUNT(*) FROM users WHERE age BETWEEN 18 AND 65 GROUP BY city HAVING COUNT(*) > {amount};",
        f"UPDATE stock SET qty = qty - {rng.randint(1, 50)} WHERE sku = 'SKU-{_digits(rng, 6)}';",
        f"Order ORD-{year}-{_digits(rng, 6)} shipped on {year}-{month:02d}-{day:02d}.",
        f"Your order number is {_order_number(rng)}; it costs ${rng.randint(5, 999)}.{_digits(rng, 2)}.",
        f"order no. {mobile_like} was refunded.",
        f"The invoice {_order_number(rng)} totals {rng.randint(1, 99)},{_digits(rng, 3)}.00 USD.",
        f"Upgrade to version {rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}.{rng.randint(1, 99)} "
        f"(was v{rng.randint(1, 9)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}).",
        f"Python 3.{rng.randint(8, 13)}.{rng.randint(0, 9)} is required; build 10.0.19045.{rng.randint(1000, 4000)}.",
        f"The job ran at {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d} "
        f"(timestamp {rng.randint(1_600_000_000, 1_800_000_000)}, "
        f"ms {rng.randint(1_600_000_000_000, 1_800_000_000_000)}).",
        f"Barcode 69{_digits(rng, 11)} scanned; HTTP {rng.choice([200, 404, 500])} on port {rng.randint(1024, 9999)}.",
        f"Reference {' '.join(no_luhn16[i : i + 4] for i in range(0, 16, 4))} is a tracking code.",
        f"Revenue grew {rng.randint(1, 40)}.{rng.randint(0, 9)}% to "
        f"{rng.randint(1, 999)},{_digits(rng, 3)},{_digits(rng, 3)} in {year}.",
        f"Dates: {day:02d}.{month:02d}.{year}, {year}/{month:02d}/{day:02d}; pi is 3.14159.",
        f"The test card {_bad_card(rng)} must be declined (bad check digit).",
        f"ID {_bad_id(rng)} fails validation.",
        f"MAC 00:1A:2B:{rng.randint(10, 99)}:4D:5E, "
        f"uptime {rng.randint(1, 23)}:{rng.randint(10, 59)}:{rng.randint(10, 59)}.",
        "Use std::vector and a::b in C++; 999.1.1.1 and 1.2.3 are not addresses.",
        rng.choice(["Dear Customer, thanks for waiting.", "I am Happy to help.", "Hi Team, the report is ready."]),
        f"Call the function 12 times with 1000 rows, then 2500 more (total {rng.randint(3500, 9999)}).",
    ]
    zh = [
        f"查询{year}年{month}月{day}日以后金额大于{amount}的订单，按金额倒序取前{rng.randint(5, 100)}条。",
        f"订单号：{_order_number(rng)}，总价 ¥{rng.randint(1, 9)},{_digits(rng, 3)}.00 元。",
        f"订单号 {mobile_like} 已退款。",
        f"今年销售额增长了 {rng.randint(1, 40)}.{rng.randint(0, 9)}%，共 {rng.randint(100, 9999)} 万元。",
        f"第 {rng.randint(1, 4)} 季度订单数 {rng.randint(1000, 99999)}，客单价 {rng.randint(10, 999)} 元。",
        f"版本号 {rng.randint(1, 9)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}.{rng.randint(1, 99)} 已发布。",
        f"工单 ORD-{year}-{_digits(rng, 6)} 于 {year}-{month:02d}-{day:02d} "
        f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d} 关闭。",
        f"SELECT city, SUM(amount) FROM sales WHERE year = {year} GROUP BY city LIMIT 10;",
        f"快递单号 {_order_number(rng)}，重量 {rng.randint(1, 30)}.{rng.randint(0, 9)} 公斤。",
        f"商品条码 69{_digits(rng, 11)}，库存 {rng.randint(0, 5000)} 件。",
        f"证件号 {_bad_id(rng)} 校验失败。",
        rng.choice(["我是学生，想查一下成绩。", "我是高级工程师。", "历史老师布置了作业。", "客户数量增加了。"]),
        f"卡号 {_bad_card(rng)} 校验位错误。",
    ]
    return rng.choice(en if lang == "en" else zh)


def generate_corpus(n: int = 500, seed: int = 0) -> list[LabeledText]:
    """``n`` labelled texts (about half English, half Chinese); the same ``seed`` gives the same texts.
    Each text has 1-3 sentences with personal data (every kind in turn, so all are well represented)
    and 1-3 sentences without."""
    rng = random.Random(seed)
    kinds = list(KINDS)
    out: list[LabeledText] = []
    turn = 0
    for i in range(n):
        lang = "en" if i % 2 == 0 else "zh"
        parts: list[tuple[str, str | None, str]] = []  # (template, kind, value)
        for _ in range(rng.randint(1, 3)):
            kind = kinds[turn % len(kinds)]
            turn += 1
            template = rng.choice(_TEMPLATES[kind][lang])
            value = _VALUES[kind](rng, lang)
            if "{v2}" in template:
                template, value = template.replace("{v2}", "{v}"), f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
            parts.append((template, kind, value))
        for _ in range(rng.randint(1, 3)):
            parts.append((_negative(rng, lang), None, ""))
        rng.shuffle(parts)
        text, spans = "", list[tuple[str, int, int]]()
        line_end = False  # the last sentence ended with its value: a form line, the next starts a new line
        for template, planted, value in parts:
            if text:
                text += "\n" if line_end or template.startswith(("Name:", "Regards")) else " " if lang == "en" else ""
            line_end = template.endswith("{v}")
            if planted is None:
                text += template
                continue
            before, after = template.split("{v}")
            start = len(text) + len(before)
            text += before + value + after
            spans.append((planted, start, start + len(value)))
        out.append(LabeledText(text, lang, tuple(spans)))
    return out


# --- scoring ------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Score:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    misses: list[str] = field(default_factory=list)  # values missed (for debugging the detectors)
    false: list[str] = field(default_factory=list)  # values wrongly detected

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0


def evaluate(cases: Iterable[LabeledText], detector: Callable[[str], list[Span]] = detect) -> dict[str, Score]:
    """Per kind (and ``overall``): true positives (same kind, same boundaries), false positives, misses."""
    scores = {k: Score() for k in (*KINDS, "overall")}
    for case in cases:
        gold = set(case.spans)
        found = {(s.kind, s.start, s.end) for s in detector(case.text)}
        for kind, start, end in found | gold:
            score = scores[kind]
            if (kind, start, end) in gold and (kind, start, end) in found:
                score.tp += 1
                scores["overall"].tp += 1
            elif (kind, start, end) in found:
                score.fp += 1
                scores["overall"].fp += 1
                score.false.append(case.text[start:end])
            else:
                score.fn += 1
                scores["overall"].fn += 1
                score.misses.append(case.text[start:end])
    return scores


def approx_tokens(text: str) -> int:
    """A tokenizer-free token count close to BPE tokenizers': words, 1-3 digit groups, each Chinese
    character and each punctuation mark count one."""
    return len(re.findall(r"[A-Za-z]+|\d{1,3}|[\u4e00-\u9fff]|[^\sA-Za-z\d\u4e00-\u9fff]", text))


def prompt_of_tokens(tokens: int = 500, seed: int = 0) -> str:
    """A prompt of about ``tokens`` tokens made of generated texts (personal data and numbers mixed)."""
    parts: list[str] = []
    for case in generate_corpus(200, seed):
        parts.append(case.text)
        if approx_tokens("\n".join(parts)) >= tokens:
            break
    return "\n".join(parts)
