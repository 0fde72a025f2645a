# ruff: noqa: RUF001 -- full-width punctuation in Chinese text is what this file is about
"""The offline detectors: each kind found in its usual forms, checksums enforced, ordinary numbers left."""

from __future__ import annotations

import datetime as dt

import pytest

from datapilot.privacy import (
    STRUCTURED_KINDS,
    card_network_ok,
    cn_id_check_char,
    detect,
    evaluate,
    generate_corpus,
    luhn_check_digit,
    luhn_ok,
    valid_cn_id,
)


def found(text: str) -> list[tuple[str, str]]:
    return [(s.kind, s.value) for s in detect(text)]


@pytest.mark.parametrize(
    "text, value",
    [
        ("mail me: zhang.san@example.com.", "zhang.san@example.com"),
        ("邮箱是li_si+work@mail.example.co.uk，谢谢", "li_si+work@mail.example.co.uk"),
        ("Contact <ops@corp.example.cn>", "ops@corp.example.cn"),
    ],
)
def test_email(text: str, value: str) -> None:
    assert found(text) == [("email", value)]


@pytest.mark.parametrize("text", ["user@localhost", "a @ b.com", "name@domain", "@mention and x@y"])
def test_not_email(text: str) -> None:
    assert [k for k, _ in found(text) if k == "email"] == []


@pytest.mark.parametrize(
    "value",
    [
        "13812345678",
        "138 1234 5678",
        "138-1234-5678",
        "138.1234.5678",
        "+86 138 1234 5678",
        "+86-13812345678",
        "+8613812345678",
        "0086 13812345678",
        "(+86) 19912345678",
        "010-62345678",
        "(021) 5432 1098",
        "0571-8765432",
        "0755 23456789",
        "+86 10 62345678",
        "+1 415 555 2671",
        "+1 (415) 555-2671",
        "+14155552671",
        "+44 20 7946 0958",
        "+49 30 901820",
        "+81 3-1234-5678",
        "+33 1 23 45 67 89",
        "+852 2123 4567",
        "(415) 555-2671",
        "415-555-2671",
        "1-800-555-0199",
    ],
)
def test_phone(value: str) -> None:
    assert found(f"call {value} today") == [("phone", value)]
    assert found(f"我的电话{value}，谢谢") == [("phone", value)]


@pytest.mark.parametrize(
    "text",
    [
        "SELECT * FROM orders WHERE amount > 1000 LIMIT 10;",
        "SELECT city, COUNT(*) FROM users WHERE age BETWEEN 18 AND 65 AND created_at >= '2024-01-15';",
        "Order ORD-2024-000123 and ORD-2023-13812345 shipped.",
        "order no. 13812345678 was refunded",
        "订单号：13812345678",
        "订单号 23456789012 已发货",
        "invoice 98765432, total $1,299.00, paid 2024-03-15 10:30:45",
        "timestamps 1700000000 and 1700000000123",
        "12345678901 is not a mobile (12x), nor is 010-12345678 a landline (local numbers start 2-9)",
        "the price rose from 4999 to 5999 yuan, +12.5% year on year; 3.14159",
        "Reference 5470 3923 9995 3812 is a tracking code.",
        "ISBN 978-7-111-12345-6; barcode 6901234567892",
    ],
)
def test_ordinary_numbers_are_left_alone(text: str) -> None:
    assert found(text) == []


def test_cn_id_checksum_and_birth_date() -> None:
    good = "11010519491231002X"
    assert valid_cn_id(good) and found(f"身份证号：{good}。") == [("cn_id", good)]
    assert found(f"ID {good.lower()} ok") == [("cn_id", good.lower())]
    first17 = "44030420000229123"  # born on 29 February 2000
    assert valid_cn_id(first17 + cn_id_check_char(first17))
    wrong = "110105194912310021"  # the check character should be X
    assert not valid_cn_id(wrong) and found(f"身份证号：{wrong}") == []
    for first17 in (
        "11010519491331002",  # 13th month
        "11010520010229002",  # 29 February 2001
        "99010519491231002",  # no province 99
        "11010518991231002",  # born before 1900
    ):
        assert not valid_cn_id(first17 + cn_id_check_char(first17)), first17
    future = f"110105{dt.date.today().year + 1}0101002"
    assert found(f"ID {future + cn_id_check_char(future)}") == []


def test_bank_card_luhn_network_and_separators() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    for value in (
        "4111111111111111",
        "4111 1111 1111 1111",
        "5500-0000-0000-0004",
        "6222 0212 3456 7890 128",  # UnionPay, 19 digits, 4-4-4-4-3
        "3782 822463 10005",  # Amex 4-6-5
        "6011000990139424",
    ):
        digits = value.replace(" ", "").replace("-", "")
        assert luhn_ok(digits) and card_network_ok(digits), value
        assert found(f"card {value}.") == [("bank_card", value)]
        assert found(f"请退款到{value}这张卡") == [("bank_card", value)]
    assert found("card 4111 1111 1111 1112") == []  # Luhn fails
    unknown = "990001234567890"
    unknown += luhn_check_digit(unknown)
    assert not card_network_ok(unknown)
    assert found(f"the number {unknown}") == []  # no card network has this prefix...
    assert found(f"卡号：{unknown}") == [("bank_card", unknown)]  # ...but it was called a card


@pytest.mark.parametrize(
    "text, kind, value",
    [
        ("login from 192.168.1.20 at night", "ipv4", "192.168.1.20"),
        ("server 8.8.4.4:53 answered", "ipv4", "8.8.4.4"),
        ("来自10.0.12.7的访问", "ipv4", "10.0.12.7"),
        ("client 2001:db8::8a2e:370:7334 blocked", "ipv6", "2001:db8::8a2e:370:7334"),
        ("full form 2001:0db8:85a3:0000:0000:8a2e:0370:7334.", "ipv6", "2001:0db8:85a3:0000:0000:8a2e:0370:7334"),
        ("link-local fe80::1ff:fe23:4567:890a%eth0", "ipv6", "fe80::1ff:fe23:4567:890a"),
        ("mapped ::ffff:192.0.2.1 here", "ipv6", "::ffff:192.0.2.1"),
        ("IPv6地址是2400:8000::12，", "ipv6", "2400:8000::12"),
    ],
)
def test_ip(text: str, kind: str, value: str) -> None:
    assert found(text) == [(kind, value)]


@pytest.mark.parametrize(
    "text",
    [
        "listen on 127.0.0.1 and 0.0.0.0, netmask 255.255.255.0, ::1",
        "upgrade to version 1.2.3.4 (was v2.0.0.1); 版本号 3.1.0.12",
        "999.1.1.1 and 1.2.3 and 10.0.19045.3693 are not addresses",
        "at 12:30:45, MAC 00:1A:2B:3C:4D:5E, std::vector, dead::beef",
    ],
)
def test_not_ip(text: str) -> None:
    assert found(text) == []


@pytest.mark.parametrize(
    "text, name",
    [
        ("Please forward this to Dr. Alice Brown today.", "Alice Brown"),
        ("Ask Mr. O'Brien about it", "O'Brien"),
        ("My name is John F. Kennedy.", "John F. Kennedy"),
        ("Hi, I'm Mary-Jane Watson from sales", "Mary-Jane Watson"),
        ("Name: Robert McDonald\nAge: 40", "Robert McDonald"),
        ("Thanks,\nEmily", "Emily"),
        ("我叫张伟，在杭州工作。", "张伟"),
        ("姓名：欧阳娜娜", "欧阳娜娜"),
        ("联系人：王小明，电话稍后给", "王小明"),
        ("这位李先生要退款", "李"),
        ("我叫小明", "小明"),  # after a strong cue, even without a known surname
        ("客户陈静的订单已发货", "陈静"),
    ],
)
def test_person(text: str, name: str) -> None:
    assert found(text) == [("person", name)]


@pytest.mark.parametrize(
    "text",
    [
        "Dear Customer, thanks for waiting.",
        "I am Happy to help, this is Great.",
        "the table name is Orders",
        "John called me yesterday",  # no cue: a known limit
        "我是学生，想查成绩。",
        "我是高级工程师。",
        "历史老师布置了作业",
        "客户数量增加了",
    ],
)
def test_not_person(text: str) -> None:
    assert found(text) == []


def test_full_width_forms_are_read_as_ascii() -> None:
    """Chinese input methods type full-width digits and signs; the span is the original text."""
    text = "我叫张伟，电话１３８ １２３４ ５６７８，邮箱ｚｈａｎｇ＠ｅｘａｍｐｌｅ．ｃｏｍ。"
    assert found(text) == [
        ("person", "张伟"),
        ("phone", "１３８ １２３４ ５６７８"),
        ("email", "ｚｈａｎｇ＠ｅｘａｍｐｌｅ．ｃｏｍ"),
    ]
    assert all(text[s.start : s.end] == s.value for s in detect(text))


def test_several_kinds_in_one_text_in_order() -> None:
    text = "我叫李娜，手机13912345678，邮箱lina@163.com，身份证11010519491231002X，IP 10.1.2.3"
    assert [k for k, _ in found(text)] == ["person", "phone", "email", "cn_id", "ipv4"]
    with pytest.raises(ValueError, match="unknown kinds"):
        detect(text, ["ssn"])
    assert [k for k, _ in [(s.kind, s) for s in detect(text, ["email", "phone"])]] == ["phone", "email"]


def test_generated_set_recall_and_precision() -> None:
    """500 generated texts (fixed seed): every structured kind found with recall and precision >= 0.95."""
    cases = generate_corpus(500, seed=20240601)
    assert len(cases) == 500 and {c.lang for c in cases} == {"en", "zh"}
    assert generate_corpus(5, seed=7) == generate_corpus(5, seed=7)
    scores = evaluate(cases)
    for kind in STRUCTURED_KINDS:
        score = scores[kind]
        assert score.tp >= 50, (kind, score.tp)
        assert score.recall >= 0.95, (kind, score.recall, score.misses[:5])
        assert score.precision >= 0.95, (kind, score.precision, score.false[:5])
    assert scores["overall"].precision >= 0.95
