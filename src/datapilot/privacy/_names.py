# ruff: noqa: RUF001 -- full-width punctuation in Chinese text is what this file is about
"""A modest, rule-based person-name detector that works offline (no NER model).

It finds a name only where the text says one is coming:

English (capitalised words, 1 to 3 of them, a middle initial allowed; ``McDonald``, ``O'Brien``,
``Mary-Jane`` included):
- after a title: Mr, Mrs, Ms, Miss, Mx, Dr, Prof, Sir, Dame, Madam (the title itself is kept);
- after "my name is", "my name's", "call me", "signed by", "Dear", and after a sign-off on its own
  ("Regards,", "Sincerely,", "Best,", "Thanks,", "Cheers,");
- after "I am" / "I'm" / "this is" / "Hi" / "Hello" only when at least two capitalised words follow
  ("I'm John Smith", not "I'm Happy");
- after a form label "Name:", "Full name:", "Contact:", "Customer:", "Patient:", "Cardholder:", "Attn:".
A capitalised word from a stop list (The, Team, Customer, Monday, January, ...) ends the name.

Chinese (a common surname, single or compound, then the given name):
- after a cue: 我叫, 我是, 名叫, 叫做, 姓名, 名字, 联系人, 收件人, 收货人, 客户, 患者, 申请人, 持卡人,
  开户人, 户名, 负责人, 经办人, 本人 (optionally followed by 是/为/叫 and a colon): the surname and 1-2
  given-name characters; after the strongest cues (我叫, 名叫, 姓名, 名字, 联系人, 收件人, 收货人,
  持卡人) any 2-3 characters, so a surname missing from the list is still found;
- 我姓X: the surname alone;
- a surname (with 0-2 given characters) before an honorific (先生, 女士, 小姐, 老师, 医生, 教授, 经理,
  律师, 主任, 同学), at the start of a clause or after a verb or preposition (联系/请问/和/给/找...).
The given name stops at characters that rarely belong to names (的, 是, 电, 手, 邮, 今, 先, 女, ...).

It misses names written without any cue ("John called me", "张伟打来电话") and names in other
scripts; it can take a capitalised non-name after a cue ("Dear Valued Member").
"""

from __future__ import annotations

import re

# --- English ------------------------------------------------------------------------------------------

_WORD = r"(?:Mc[A-Z][a-z]+|Mac[A-Z][a-z]+|O'[A-Z][a-z]+|[A-Z][a-z]+(?:-[A-Z][a-z]+)?)"
_NAME_EN = rf"{_WORD}(?:[ \t]+(?:[A-Z]\.[ \t]+)?{_WORD}){{0,2}}"
_TITLE = re.compile(rf"\b(?:Mrs|Mr|Ms|Miss|Mx|Dr|Prof|Sir|Dame|Madam)\.?[ \t]+({_NAME_EN})")
_NAME_AT = re.compile(_NAME_EN)
# Cues, case-insensitive; the name after them is matched case-sensitively (``_NAME_AT``). ``weak``
# cues need two words after them.
_CUE_EN = re.compile(
    r"(?i)(?:\b(?:my name is|my name's|call me|signed by|dear)[ \t]+"
    r"|\b(?:regards|sincerely|best|thanks|cheers),[ \t]*\n?[ \t]*"
    r"|(?:(?:^|\n)[ \t]*(?:name|full name|contact|contact person|customer|patient|cardholder|attn)"
    r"|\b(?:full|customer|contact|patient|cardholder) name)[ \t]*[:=][ \t]*"
    r"|\b(?P<weak>i am|i'm|this is|hi|hello)[ \t]+)"
)
# Some word of each cue (lower case): a text with none of them has no cue, and the regex is not run.
_CUE_WORDS_EN = (
    *("name", "call me", "signed", "dear", "regards", "sincerely", "best", "thanks", "cheers"),
    *("contact", "customer", "patient", "cardholder", "attn", "i am", "i'm", "this is", "hi", "hello"),
)
_STOP_EN = frozenset(
    """The A An I It Its This That These Those Here There We You Your Our My Me He She They Them All Any
    Sir Madam Team Support Service Services Customer Customers Manager Admin Administrator Everyone Friend
    Friends Colleague Colleagues User Users Client Clients Sales Hello Hi Hey Thanks Thank Please Sorry
    Happy Glad Not Just Very So Good Great Fine Ok Yes No New Best Kind Warm Valued Member Members Mr Mrs
    Ms Dr Prof Monday Tuesday Wednesday Thursday Friday Saturday Sunday January February March April May
    June July August September October November December Python Java Sql China English Chinese America
    Street Road Avenue Inc Ltd Corp Company Department University Hospital Bank Order Account""".split()
)


def _trim_en(name: str) -> str:
    """Cut the name at its first stop word; empty when it starts with one."""
    kept: list[str] = []
    for word in name.split():
        if word in _STOP_EN:
            break
        kept.append(word)
    while kept and kept[-1].endswith(".") and len(kept[-1]) == 2:  # a dangling initial
        kept.pop()
    return " ".join(kept)


def _english(text: str) -> list[tuple[int, int]]:
    found: list[tuple[int, int]] = []
    for m in _TITLE.finditer(text):
        name = _trim_en(m.group(1))
        if name:
            found.append((m.start(1), m.start(1) + len(name)))
    low = text.lower()
    if not any(word in low for word in _CUE_WORDS_EN):
        return found
    for m in _CUE_EN.finditer(text):
        after = _NAME_AT.match(text, m.end())
        if after is None:
            continue
        name = _trim_en(after.group())
        if len(name.split()) >= (2 if m.group("weak") else 1):
            found.append((after.start(), after.start() + len(name)))
    return found


# --- Chinese ------------------------------------------------------------------------------------------

_SURNAMES_1 = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
    "姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
    "常温康施文牛樊葛邢安齐易乔伍庞颜倪庄聂章鲁岳翟殷詹申欧耿关兰焦俞左柳甘祝包宁尚符舒阮柯纪梅童凌毕单季"
    "裴霍涂成苗谷盛曲翁冉骆蓝路游辛靳管柴蒙鲍华喻祁蒲房滕屈饶解牟艾尤阳时穆农司卓古吉缪简车项连芦麦褚娄窦"
    "戚岑景党宫费卜冷晏席卫米柏宗瞿桂全佟应臧闵苟邬边卞姬师和仇栾隋商刁沙荣巫寇桑郎甄丛仲虞敖巩明佘池查麻"
    "苑迟邝"
)
_SURNAMES_2 = (
    "欧阳 司马 上官 诸葛 东方 皇甫 尉迟 公孙 慕容 长孙 宇文 司徒 令狐 夏侯 轩辕 端木 独孤 南宫 西门 百里 呼延 "
    "澹台 公冶 太史 申屠"
).split()
# Characters that end a given name: particles, pronouns, verbs and the first characters of the words that
# usually follow a name (电话, 手机, 邮箱, 身份证, 先生, 女士, 老师...).
_STOP_ZH = frozenset(
    "的了是在和与及跟同今昨电手邮身住我你他她它们请说要想有没不也都就还又很会能把被给让从对为这那吗呢吧啊呀"
    "哦嗯先女老经医教律主同姐士号码岁地址联系打来去到住今什么怎哪负责客户订单"
)
_CJK = "\u4e00-\u9fff"
_SURNAME = "(?:" + "|".join(_SURNAMES_2) + f"|[{_SURNAMES_1}])"
_STRONG_CUES = "我叫|名叫|姓名|名字|联系人|收件人|收货人|持卡人"
_CUES = f"{_STRONG_CUES}|我是|叫做|客户|患者|申请人|开户人|户名|负责人|经办人|本人"
_CUE_ZH = re.compile(rf"(?:{_CUES})[ \t:：]*(?:是|为|叫)?[ \t:：]*([{_CJK}])")
_STRONG_CUE_STARTS = tuple(_STRONG_CUES.split("|"))
_SURNAME_ONLY = re.compile(rf"我姓({_SURNAME})")
_HONORIFIC = re.compile("先生|女士|小姐|老师|医生|教授|经理|律师|主任|同学")
# Before a name with an honorific: the start of a clause, or a verb or preposition that takes a person.
_BEFORE_HONORED = frozenset("联系问给找位和与跟是请向对被让叫见")
_SURNAME_AT = re.compile(_SURNAME)


def _is_cjk(c: str) -> bool:
    return "\u4e00" <= c <= "\u9fff"


def _name_end(text: str, start: int, least: int, most: int) -> int | None:
    """Where the longest name of ``least``..``most`` characters from ``start`` ends: no stop character
    in it, and a boundary after it (a stop character, anything not Chinese, the end)."""
    best = None
    for n in range(1, most + 1):
        i = start + n - 1
        if i >= len(text) or not _is_cjk(text[i]) or text[i] in _STOP_ZH:
            break
        after = start + n
        if n >= least and (after >= len(text) or not _is_cjk(text[after]) or text[after] in _STOP_ZH):
            best = after
    return best


def _chinese(text: str) -> list[tuple[int, int]]:
    found: list[tuple[int, int]] = []
    for m in _CUE_ZH.finditer(text):
        start = m.start(1)
        sur = _SURNAME_AT.match(text, start)
        end = _name_end(text, sur.end(), 1, 2) if sur is not None else None
        if end is None and m.group().startswith(_STRONG_CUE_STARTS):
            end = _name_end(text, start, 2, 3)
        if end is not None:
            found.append((start, end))
    for m in _SURNAME_ONLY.finditer(text):
        found.append((m.start(1), m.end(1)))
    for m in _HONORIFIC.finditer(text):
        end = m.start()
        for start in range(max(0, end - 4), end):  # the longest name first: surname (1-2) + given (0-2)
            if start > 0 and _is_cjk(text[start - 1]) and text[start - 1] not in _BEFORE_HONORED:
                continue
            sur = _SURNAME_AT.match(text, start, end)
            if sur is not None and sur.end() >= end - 2 and not any(c in _STOP_ZH for c in text[sur.end() : end]):
                found.append((start, end))
                break
    return found


def find_names(text: str) -> list[tuple[int, int]]:
    """(start, end) of each person name found, without overlaps, in text order."""
    spans = _english(text)
    if re.search(f"[{_CJK}]", text):
        spans += _chinese(text)
    spans.sort(key=lambda s: (s[0], -s[1]))
    out: list[tuple[int, int]] = []
    for start, end in spans:
        if end > start and (not out or start >= out[-1][1]):
            out.append((start, end))
    return out
