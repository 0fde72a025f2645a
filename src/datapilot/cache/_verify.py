"""The verifier's bilingual half: what two questions that embed close differ in, and whether it matters.

An embedding compares two questions as wholes; a wrong hit is nearly always two questions that agree
everywhere but in one key term. So the verifier aligns the two questions' content units and judges
what is left over: a different number (digits, English number words, Chinese numerals), version or
code identifier (``python3``, ``--hard``, ``es6``, ``c++``), a different member of a class of names
(programming and natural languages, places, holidays, units, currencies, weekdays, months, seasons,
planets), a negation on one side only, or an opposite (``max``/``min``, ``最大``/``最小``) rejects the
hit. For CJK text, where all-MiniLM-L6-v2 (an English model) puts most questions close together,
the characters are aligned too: two questions identical but for one short replaced span differ in
exactly the term that span names, unless the two spans are known to mean the same (``怎么``/``如何``).

Everything here is a few set operations and one ``difflib`` alignment on short strings: microseconds,
run only on the few candidates above the cosine threshold.
"""

from __future__ import annotations

import difflib
import itertools
import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from datapilot.cache._key import normalise

_CJK_CHAR = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_LATIN = re.compile(r"[a-z0-9][a-z0-9+#._-]*[a-z0-9+#]|[a-z0-9]|--?[a-z][a-z0-9-]*|\.[a-z]+")
# Tokens that name a version, a flag or an identifier: "python3", "es6", "v2", "--hard", "-f", "c++".
_IDENT = re.compile(r"^(?:--?[a-z]|.*\d.*[a-z]|.*[a-z].*\d|.*[+#]$|\.[a-z])")
_NUM = re.compile(r"\d+(?:\.\d+)?")

_CN_DIGITS = {
    "零": 0,
    "〇": 0,
    "一": 1,
    "二": 2,
    "两": 2,
    "三": 3,
    "四": 4,
    "五": 5,
    "六": 6,
    "七": 7,
    "八": 8,
    "九": 9,
}
_CN_UNITS = {"十": 10, "百": 100, "千": 1000, "万": 10_000, "亿": 100_000_000}
_CN_NUMBER = re.compile(r"[零〇一二两三四五六七八九十百千万亿]+")
# Words with a numeral character that are no number: "一下" (a moment), "一起", "一些", "万一"...
_CN_NOT_NUMBER = (
    "一下",
    "一些",
    "一起",
    "一样",
    "一直",
    "一定",
    "一般",
    "一点",
    "一切",
    "统一",
    "唯一",
    "万一",
    "一旦",
    "一边",
    "一种",
    "一个",
    "第一",
    "一次",
    "一共",
    "同一",
    "之一",
    "一致",
    "一方面",
    "千万",
    "十分",
    "百度",
    "三明治",
    "一部分",
    "逐一",
    "一会",
    "一句",
    "一篇",
    "一段",
    "一份",
    "一张",
    "一条",
    "一本",
    "一门",
)

# "一" before a measure word is an article ("写一首诗", "推荐一本书"): another count ("两首") still differs.
_ONE_AS_ARTICLE = re.compile(r"一(?=[个本部首篇张条门句段份次种件位只支杯碗道款家所封台辆双套顿场幅棵朵颗间栋座架把])")

# English negations and number words, shared with the guards (``_guards``).
NEGATIONS = frozenset(
    """not no never none nobody nothing neither nor without cannot can't don't doesn't didn't isn't aren't
    wasn't weren't won't wouldn't shouldn't couldn't haven't hasn't hadn't mustn't needn't shan't ain't
    dont doesnt didnt isnt arent wasnt werent wont wouldnt shouldnt couldnt havent hasnt cant""".split()
)

NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen twenty".split()
    )
}
NUMBER_WORDS.update({"thirty": "30", "forty": "40", "fifty": "50", "hundred": "100", "thousand": "1000"})
NUMBER_WORDS.update({"million": "1000000", "billion": "1000000000", "first": "1st", "second": "2nd"})

_ZH_NEGATION = re.compile(r"不|没|别|未|勿|无法|非")
# Words with a negation character that negate nothing.
_ZH_NOT_NEGATION = (
    "不同",
    "不错",
    "不过",
    "不仅",
    "不断",
    "不少",
    "不久",
    "不管",
    "差不多",
    "不如",
    "要不要",
    "是不是",
    "能不能",
    "会不会",
    "可不可以",
    "有没有",
    "对不对",
    "好不好",
    "行不行",
    "需不需要",
    "用不用",
    "别人",
    "区别",
    "别的",
    "特别",
    "分别",
    "类别",
    "级别",
    "性别",
    "识别",
    "告别",
    "非常",
    "是非",
    "未来",
    "并非",
    "无论",
    "除非",
    "没错",
)

_A_NOT_A = re.compile(r"([\u4e00-\u9fff])[不没]\1")

# Opposites: one side's word and the other side's counterpart reject the hit.
_OPPOSITE_PAIRS = [
    ("最大", "最小"),
    ("最高", "最低"),
    ("最多", "最少"),
    ("最快", "最慢"),
    ("最早", "最晚"),
    ("最好", "最差"),
    ("最长", "最短"),
    ("最贵", "最便宜"),
    ("增加", "减少"),
    ("上涨", "下跌"),
    ("升序", "降序"),
    ("买入", "卖出"),
    ("购买", "出售"),
    ("买", "卖"),
    ("优点", "缺点"),
    ("好处", "坏处"),
    ("上传", "下载"),
    ("导入", "导出"),
    ("输入", "输出"),
    ("加密", "解密"),
    ("压缩", "解压"),
    ("打开", "关闭"),
    ("开启", "关闭"),
    ("启用", "禁用"),
    ("添加", "删除"),
    ("加上", "去掉"),
    ("加", "去掉"),
    ("安装", "卸载"),
    ("登录", "退出"),
    ("增加", "删除"),
    ("之前", "之后"),
    ("以前", "以后"),
    ("前", "后"),
    ("上", "下"),
    ("左", "右"),
    ("东", "西"),
    ("南", "北"),
    ("男", "女"),
    ("冷", "热"),
    ("大", "小"),
    ("多", "少"),
    ("高", "低"),
    ("长", "短"),
    ("快", "慢"),
    ("早", "晚"),
    ("新", "旧"),
    ("胖", "瘦"),
    ("贵", "便宜"),
    ("进口", "出口"),
    ("收入", "支出"),
    ("正数", "负数"),
    ("合法", "违法"),
    ("成功", "失败"),
    ("ascending", "descending"),
    ("asc", "desc"),
    ("min", "max"),
    ("minimum", "maximum"),
    ("first", "last"),
    ("earliest", "latest"),
    ("oldest", "newest"),
    ("import", "export"),
    ("upload", "download"),
    ("increase", "decrease"),
    ("lowest", "highest"),
    ("smallest", "largest"),
    ("shortest", "longest"),
    ("cheapest", "priciest"),
    ("install", "uninstall"),
    ("enable", "disable"),
    ("push", "pull"),
    ("encode", "decode"),
    ("serialize", "deserialize"),
    ("compress", "decompress"),
    ("zip", "unzip"),
    ("lock", "unlock"),
    ("left", "right"),
    ("inner", "outer"),
    ("before", "after"),
    ("above", "below"),
    ("more", "less"),
    ("more", "fewer"),
    ("buy", "sell"),
    ("pros", "cons"),
    ("advantages", "disadvantages"),
    ("add", "remove"),
    ("add", "delete"),
    ("hot", "cold"),
    ("warm", "cool"),
    ("start", "stop"),
    ("open", "close"),
    ("on", "off"),
    ("yesterday", "tomorrow"),
    ("morning", "evening"),
    ("male", "female"),
]
_OPPOSITE: dict[str, set[str]] = {}
for _a, _b in _OPPOSITE_PAIRS:
    _OPPOSITE.setdefault(_a, set()).add(_b)
    _OPPOSITE.setdefault(_b, set()).add(_a)

# Classes of names: two questions naming different members of one class ask different things.
_CLASSES: dict[str, str] = {
    "programming language": """python java javascript typescript go golang rust ruby php perl kotlin swift scala
        c c++ c# csharp haskell lua r matlab julia dart elixir erlang clojure bash shell powershell sql html css
        objective-c fortran cobol groovy vba""",
    "framework": """react vue angular svelte django flask fastapi spring rails laravel express nextjs nuxt
        pytorch tensorflow keras pandas numpy polars spark hadoop kafka redis mysql postgresql postgres sqlite
        mongodb oracle docker kubernetes k8s podman nginx apache linux windows macos ubuntu debian centos
        android ios git svn excel word powerpoint chrome firefox safari edge aws azure gcp""",
    "natural language": """english chinese french german spanish japanese korean russian italian portuguese
        arabic hindi dutch swedish greek turkish thai vietnamese latin cantonese mandarin
        英文 英语 中文 汉语 法语 法文 德语 德文 西班牙语 日语 日文 韩语 韩文 俄语 俄文 意大利语 葡萄牙语
        阿拉伯语 粤语 普通话 拉丁语 泰语 越南语""",
    "place": """china usa america japan korea france germany italy spain uk england britain canada australia
        india russia brazil mexico singapore thailand vietnam egypt tokyo paris london berlin beijing shanghai
        shenzhen guangzhou hangzhou chengdu hong kong taiwan new york rome madrid sydney seoul moscow bangkok
        dubai toronto vancouver chicago boston seattle lisbon amsterdam vienna prague istanbul cairo osaka kyoto
        中国 美国 日本 韩国 法国 德国 意大利 西班牙 英国 加拿大 澳大利亚 印度 俄罗斯 巴西 墨西哥 新加坡
        泰国 越南 埃及 东京 巴黎 伦敦 柏林 北京 上海 深圳 广州 杭州 成都 重庆 南京 武汉 西安 苏州 天津
        香港 台湾 台北 纽约 罗马 首尔 莫斯科 曼谷 迪拜 悉尼 大阪 京都 云南 四川 广东 浙江 江苏 新疆 西藏
        海南 三亚 厦门 青岛 大连 长沙 昆明 丽江 拉萨 哈尔滨""",
    "holiday": """christmas easter thanksgiving halloween hanukkah ramadan diwali new year valentine
        春节 中秋节 中秋 端午节 端午 元宵节 元宵 清明节 清明 国庆节 国庆 劳动节 五一 圣诞节 圣诞 元旦
        情人节 七夕 重阳节 除夕 感恩节 万圣节 复活节""",
    "unit": """km kilometer kilometers kilometre mile miles meter meters metre m cm mm inch inches foot feet yard
        kg kilogram kilograms g gram grams lb lbs pound pounds ounce ounces oz ton tons liter liters litre
        ml gallon gallons cup cups tablespoon teaspoon celsius fahrenheit kelvin second seconds minute
        minutes hour hours day days week weeks month months year years byte bytes kb mb gb tb
        公里 千米 英里 厘米 毫米 英寸 英尺 公斤 千克 盎司 毫升 加仑 摄氏度 华氏度 分钟 小时 星期 个月 字节""",
    "currency": """usd eur gbp jpy cny rmb hkd krw aud cad chf inr dollar dollars euro euros pound yen yuan
        美元 欧元 英镑 日元 人民币 港币 韩元 澳元 加元 卢比 比特币 bitcoin""",
    "weekday": """monday tuesday wednesday thursday friday saturday sunday weekday weekend
        周一 周二 周三 周四 周五 周六 周日 周末 星期一 星期二 星期三 星期四 星期五 星期六 星期日 星期天""",
    "month": """january february march april may june july august september october november december
        一月 二月 三月 四月 五月 六月 七月 八月 九月 十月 十一月 十二月""",
    "season": "spring summer autumn fall winter 春天 夏天 秋天 冬天 春季 夏季 秋季 冬季",
    "meal": "breakfast lunch dinner brunch 早餐 午餐 晚餐 早饭 午饭 晚饭 夜宵",
    "color": """red green blue yellow black white orange purple pink brown gray grey
        红色 绿色 蓝色 黄色 黑色 白色 橙色 紫色 粉色 棕色 灰色""",
    "animal": "cat cats dog dogs rabbit bird fish hamster horse 猫 狗 兔子 鸟 鱼 仓鼠 马 猫咪 狗狗",
    "http method": "get post put patch delete head options",
    "planet": "mercury venus earth mars jupiter saturn uranus neptune moon sun 水星 金星 地球 火星 木星 土星 月球 太阳",
}
# Classes where one side naming a member and the other none is already another question ("in Rust").
_ONE_SIDED = frozenset({"programming language", "natural language", "place", "holiday", "currency"})
# Words that are names only sometimes ("go home", "vitamin c", "may I", "spring rolls").
_AMBIGUOUS = frozenset(
    "go c r may march spring fall word edge swift rust express sun moon earth on m g oz sql html css shell "
    "bash excel git word chrome safari apache orange turkey china get post put patch delete head options".split()
)
_NAME_CLASS: dict[str, str] = {}
for _cls, _words in _CLASSES.items():
    for _w in _words.split():
        _NAME_CLASS.setdefault(_w, _cls)
# Two names of one thing: compared as the first.
_SAME_NAME = {
    "英语": "英文",
    "汉语": "中文",
    "普通话": "中文",
    "法文": "法语",
    "德文": "德语",
    "日文": "日语",
    "韩文": "韩语",
    "俄文": "俄语",
    "golang": "go",
    "csharp": "c#",
    "postgres": "postgresql",
    "k8s": "kubernetes",
    "中秋": "中秋节",
    "端午": "端午节",
    "元宵": "元宵节",
    "清明": "清明节",
    "国庆": "国庆节",
    "圣诞": "圣诞节",
    "星期天": "星期日",
    "周日": "星期日",
    "周六": "星期六",
    "周五": "星期五",
    "周四": "星期四",
    "周三": "星期三",
    "周二": "星期二",
    "周一": "星期一",
    "千米": "公里",
    "kilometre": "kilometer",
    "km": "kilometer",
    "metre": "meter",
    "litre": "liter",
    "rmb": "cny",
    "人民币": "cny",
    "美元": "usd",
    "欧元": "eur",
    "日元": "jpy",
    "英镑": "gbp",
    "早饭": "早餐",
    "午饭": "午餐",
    "晚饭": "晚餐",
    "春季": "春天",
    "夏季": "夏天",
    "秋季": "秋天",
    "冬季": "冬天",
    "autumn": "fall",
}
_MULTIWORD = sorted((w for w in _NAME_CLASS if " " in w), key=len, reverse=True)
_CJK_NAMES = sorted((w for w in _NAME_CLASS if _CJK_CHAR.search(w)), key=len, reverse=True)

# English words that carry no key term: function words, question words, politeness.
_FILLERS = frozenset(
    """a an the is are was were be been being am do does did have has had i me my we our you your it its they
    them their this that these those of at by for with about into to from in on what which who whom how why
    when where there here so just should would could can will shall may might must also get got please tell
    know want need like way best good really some any one ones thing things whats hows explain make sure
    whether if and or but""".split()
)

# Spans that replace one another without changing the question (Chinese question words, particles and
# politeness; all compared after normalisation).
_SAME = [
    {
        "怎么",
        "如何",
        "怎样",
        "咋",
        "怎么样",
        "如何才能",
        "怎么才能",
        "要怎么",
        "该怎么",
        "应该怎么",
        "应该如何",
        "该如何",
    },
    {"什么", "啥", "哪些", "什么样"},
    {"为什么", "为啥", "为何", "怎么会"},
    {"吗", "呢", "吧", "啊", "呀", ""},
    {"多少", "几"},
    {"可以", "能", "能够", "可不可以", "能不能", "是否可以", "是否能"},
    {"的", "地", "得", ""},
    {"请", "请问", "麻烦", "帮我", "给我", "帮忙", ""},
    {"一下", ""},
    {"用", "使用", "利用", "通过"},
    {"是什么", "是啥", "指什么", "什么意思", "是什么意思"},
    {"区别", "差别", "不同", "差异"},
    {"推荐", "介绍"},
    {"写", "编写", "写一个", "实现"},
    {"列表", "list"},
    {"字典", "dict"},
    {"这个", "该", "此"},
    {"和", "与", "跟", "同"},
    {"我", "我们", ""},
    {"中", "里", "里面", "中的", "里的"},
]
_SAME_INDEX: dict[str, list[int]] = {}
for _i, _group in enumerate(_SAME):
    for _s in _group:
        _SAME_INDEX.setdefault(_s, []).append(_i)


def _cn_int(text: str) -> int | None:
    """A Chinese numeral as an integer ("二十五" 25, "两千" 2000, "十" 10), or None."""
    total, section, digit = 0, 0, None
    for ch in text:
        if ch in _CN_DIGITS:
            digit = _CN_DIGITS[ch]
        elif ch in _CN_UNITS:
            unit = _CN_UNITS[ch]
            if unit >= 10_000:
                total += (section + (digit or 0)) * unit
                section, digit = 0, None
            else:
                section += (1 if digit is None else digit) * unit
                digit = None
        else:
            return None
    return total + section + (digit or 0)


def _mask(text: str, words: tuple[str, ...]) -> str:
    for w in words:
        text = text.replace(w, " " * len(w))
    return text


class Units:
    """The key terms of one normalised question."""

    __slots__ = ("cjk", "idents", "name_order", "names", "negations", "numbers", "text", "words")

    def __init__(self, text: str) -> None:
        self.text = text
        numbers: set[str] = set(_NUM.findall(text))
        unmasked = _ONE_AS_ARTICLE.sub("  ", _mask(text, _CN_NOT_NUMBER))
        for run in _CN_NUMBER.findall(unmasked):
            value = _cn_int(run)
            if value is not None:
                numbers.add(str(value))
        latin = _LATIN.findall(_CJK_RUN.sub(" ", text))
        self.words = tuple(latin)
        numbers |= {NUMBER_WORDS[w] for w in latin if w in NUMBER_WORDS}
        self.numbers = frozenset(numbers)
        self.idents = frozenset(w for w in latin if _IDENT.match(w) and not _NUM.fullmatch(w))
        names: set[tuple[str, str]] = set()
        for w in _MULTIWORD:
            if re.search(rf"(?<![a-z]){re.escape(w)}(?![a-z])", text):
                names.add((_NAME_CLASS[w], w))
        for w in latin:
            if w not in _NAME_CLASS and w.endswith("s") and w[:-1] in _NAME_CLASS:
                w = w[:-1]  # "canadas": "Canada's" without its apostrophe
            if w in _NAME_CLASS:
                names.add((_NAME_CLASS[w], w))
        rest = text
        for w in _CJK_NAMES:
            if w in rest:
                names.add((_NAME_CLASS[w], w))
                rest = rest.replace(w, " " * len(w))
        found = {w: text.find(w) for _, w in names}
        names = {(c, _SAME_NAME.get(w, w)) for c, w in names}
        self.names = frozenset(names)
        self.name_order = tuple(_SAME_NAME.get(w, w) for w in sorted(found, key=lambda w: (found[w], -len(w))))
        self.cjk = "".join(_CJK_RUN.findall(text))
        negations = sum(w in NEGATIONS for w in latin)
        asked = _A_NOT_A.sub("", _mask(self.cjk, _ZH_NOT_NEGATION))  # "熟没熟", "去不去": a question, no negation
        negations += len(_ZH_NEGATION.findall(asked))
        self.negations = negations


_CONTRACTIONS = [
    (re.compile(r"n[’']t\b", re.I), " not"),
    (re.compile(r"[’']re\b", re.I), " are"),
    (re.compile(r"[’']ve\b", re.I), " have"),
    (re.compile(r"[’']ll\b", re.I), " will"),
    (re.compile(r"[’']m\b", re.I), " am"),
    (re.compile(r"[’']d\b", re.I), " would"),
    (re.compile(r"\b(what|who|where|how|it|that|there|here)[’']s\b", re.I), r"\1 is"),
]


# Other spellings of one name, replaced before anything is parsed: "k8s" is no number 8, and "38°C" no
# programming language C.
_ALIASES = [
    (re.compile(r"(?<![a-z0-9])k8s(?![a-z0-9])", re.I), "kubernetes"),
    (re.compile(r"(?<![a-z0-9])js(?![a-z0-9])", re.I), "javascript"),
    (re.compile(r"(?<![a-z0-9])i18n(?![a-z0-9])", re.I), "internationalization"),
    (re.compile(r"(?<=\d)\s*(?:°\s*c|℃)(?![a-z])", re.I), " celsius"),
    (re.compile(r"(?<=\d)\s*(?:°\s*f|℉)(?![a-z])", re.I), " fahrenheit"),
]


@lru_cache(maxsize=65536)
def units(text: str) -> Units:
    for pattern, replacement in (*_CONTRACTIONS, *_ALIASES):
        text = pattern.sub(replacement, text)
    return Units(normalise(text.replace("can not", "cannot")))


def _opposed(a: Units, b: Units) -> bool:
    for word, others in _OPPOSITE.items():
        if _has(a, word) and not _has(b, word) and any(_has(b, o) and not _has(a, o) for o in others):
            return True
    return False


def _has(u: Units, word: str) -> bool:
    if _CJK_CHAR.match(word):
        return word in u.cjk
    return word in u.words


def _class_swap(a: Units, b: Units) -> str | None:
    """The class whose members differ: both sides name a member and the members differ, or (for the
    classes where naming one changes the question, and words that are names only) one side names one."""
    only_a, only_b = a.names - b.names, b.names - a.names
    for cls, word in only_a | only_b:
        mine = {_singular(w) for c, w in a.names if c == cls}
        theirs = {_singular(w) for c, w in b.names if c == cls}
        if mine == theirs or _contained(word, mine | theirs):
            continue
        if (mine and theirs) or (cls in _ONE_SIDED and word not in _AMBIGUOUS):
            return cls
    return None


def _singular(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and word.isascii() else word


def _contained(word: str, others: set[str]) -> bool:
    """A name inside a longer one of the same class on the other side ("中秋" in "中秋节")."""
    return any(word != o and (word in o or o in word) for o in others)


def _cjk_replacement(a: Units, b: Units) -> bool:
    """Two CJK questions identical but for one short replaced span (not a known equivalent): the span is
    the key term they differ in ("北京" / "上海" is caught by the names; this catches the rest)."""
    if not a.cjk or not b.cjk or len(a.cjk) < 4 or len(b.cjk) < 4 or max(len(a.cjk), len(b.cjk)) > _MAX_ALIGNED:
        return False
    ops = _merged_changes(list(difflib.SequenceMatcher(None, a.cjk, b.cjk, autojunk=False).get_opcodes()))
    changes = []
    for tag, i1, i2, j1, j2 in ops:
        x, y = a.cjk[i1:i2], b.cjk[j1:j2]
        if _equivalent(x, y):
            continue
        changes.append((tag, x, y))
    if not changes or len(set(changes)) != 1:  # one replacement, possibly made at several places
        return False
    tag, x, y = changes[0]
    same = len(a.cjk) - len(x) * len(changes)
    return tag == "replace" and 1 <= len(x) <= 4 and 1 <= len(y) <= 4 and same > max(len(x), len(y))


# The alignments take time quadratic in the length: questions longer than this many characters (CJK) or
# words are compared by the other rules only (a 100k-character message took a minute to align).
_MAX_ALIGNED = 400


def _merged_changes(opcodes: list[Any]) -> list[tuple[str, int, int, int, int]]:
    """The non-equal spans of an alignment, two joined into one replacement where a single character
    matched between them by chance ("林俊杰" / "周杰伦" align on "杰": one name replaced, not two edits)."""
    changes: list[tuple[str, int, int, int, int]] = []
    for k, (tag, i1, i2, j1, j2) in enumerate(opcodes):
        if tag != "equal":
            changes.append((tag, i1, i2, j1, j2))
            continue
        between = 0 < k < len(opcodes) - 1 and i2 - i1 == 1 and changes and changes[-1][2] == i1
        nxt = opcodes[k + 1] if between else None
        if nxt is not None and nxt[0] != "equal":
            last = changes[-1]
            # Only where both sides change: two deletions around one kept character are two deletions.
            if not ((last[2] > last[1] or nxt[2] > nxt[1]) and (last[4] > last[3] or nxt[4] > nxt[3])):
                continue
            changes.pop()
            changes.append(("replace", last[1], nxt[2], last[3], nxt[4]))
            opcodes[k + 1] = ("equal", nxt[2], nxt[2], nxt[4], nxt[4])  # consumed
    return [c for c in changes if c[2] > c[1] or c[4] > c[3]]


def _stem(word: str) -> str:
    """A crude English stem, enough to let "scores"/"score" and "calories"/"calorie" align."""
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > 4 and word.endswith(suffix):
            word = word[: -len(suffix)]
            break
    return word[:-1] if len(word) > 3 and word.endswith("e") else word


def _latin_substitution(a: Units, b: Units) -> bool:
    """Two questions whose words align but for one replaced word or two on each side (fillers aside): the
    shape of nearly every one-term hard negative ("chicken thighs" / "chicken breasts", "POST" / "GET")
    and of few paraphrases, which rephrase more than one place."""
    # Numbers are compared apart ("three" and "3" are one number, not a replaced word).
    wa = [_stem(w) for w in a.words if w not in NUMBER_WORDS and not _NUM.fullmatch(w)]
    wb = [_stem(w) for w in b.words if w not in NUMBER_WORDS and not _NUM.fullmatch(w)]
    if len(wa) < 3 or len(wb) < 3 or max(len(wa), len(wb)) > _MAX_ALIGNED:
        return False
    changes = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, wa, wb, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        x = [w for w in wa[i1:i2] if w not in _FILLERS]
        y = [w for w in wb[j1:j2] if w not in _FILLERS]
        if x or y:
            changes.append((x, y))
    if len(changes) != 1:
        return False
    x, y = changes[0]
    # The rest must say enough to fix the topic ("who wrote hamlet" / "who is the author of hamlet" shares
    # one word: a rewording, not one term changed in a longer question).
    shared = len({w for w in wa if w not in _FILLERS} & {w for w in wb if w not in _FILLERS})
    if shared < 2:
        return False
    return bool(x) and bool(y) and len(x) <= 2 and len(y) <= 2 and not (set(x) & set(wb)) and not (set(y) & set(wa))


def _latin_terms_in_cjk(a: Units, b: Units) -> bool:
    """In Chinese text the Latin words are the technical terms: each side having one the other lacks
    ("docker rm" / "docker kill", "useEffect" / "useLayoutEffect") is a different question."""
    if not a.cjk or not b.cjk:
        return False
    ta = {w for w in a.words if w not in _FILLERS}
    tb = {w for w in b.words if w not in _FILLERS}
    return bool(ta - tb) and bool(tb - ta)


def _names_reordered(a: Units, b: Units) -> bool:
    """The same names in another order ("美元兑人民币" / "人民币兑美元", "USD to EUR" / "EUR to USD")."""
    order_a, order_b = a.name_order, b.name_order
    return len(order_a) >= 2 and sorted(order_a) == sorted(order_b) and order_a != order_b


def _same_span(x: str, y: str) -> bool:
    groups = _SAME_INDEX.get(x)
    return bool(groups) and any(i in _SAME_INDEX.get(y, ()) for i in groups or ())


@lru_cache(maxsize=65536)
def _equivalent(x: str, y: str) -> bool:
    """``x`` and ``y`` are the same span, known equivalents, or split into pieces that are, in order (the
    alignment groups "里怎么" / "中如何" into one replacement: "里" / "中" and "怎么" / "如何")."""
    if x == y or _same_span(x, y):
        return True
    if len(x) + len(y) > 12:
        return False
    return any(
        _equivalent(x[:i], y[:j]) and _equivalent(x[i:], y[j:])
        for i in range(len(x) + 1)
        for j in range(len(y) + 1)
        if 0 < i + j < len(x) + len(y)
    )


def key_term_difference(query: str, candidate: str, *, substitutions: bool = True) -> str | None:
    """The kind of key term ``query`` and ``candidate`` differ in (``numbers``, ``identifier``,
    ``negation``, ``direction``, a class of names such as ``holiday``, ``superlative``, ``term`` or
    ``unrelated``), or ``None``. ``substitutions=False`` lets two English questions that differ by one
    replaced word through (QQP's labels count many such pairs as duplicates; chat traffic does not)."""
    a, b = units(query), units(candidate)
    if a.text == b.text:
        return None
    if a.numbers != b.numbers:
        return "numbers"
    if a.idents != b.idents:
        return "identifier"
    if (a.negations % 2) != (b.negations % 2):
        return "negation"
    cls = _class_swap(a, b)
    if cls is not None:
        return cls
    if _opposed(a, b) or _names_reordered(a, b):
        return "direction"
    sa, sb = _superlatives(a), _superlatives(b)
    if sa and sb and sa != sb:
        return "superlative"
    if _cjk_replacement(a, b) or _latin_terms_in_cjk(a, b):
        return "term"
    if substitutions and not a.cjk and not b.cjk and _latin_substitution(a, b):
        return "term"
    if a.cjk and b.cjk and _overlap(a, b) < _MIN_CJK_OVERLAP:
        return "unrelated"
    return None


# all-MiniLM-L6-v2 embeds most Chinese questions close together; two that share under this share of
# their content characters (particles and question words aside) are about different things.
_MIN_CJK_OVERLAP = 0.3
_CJK_FUNCTION = frozenset(
    "的了吗呢吧啊呀是在有和与跟把被给我你他她它们这那个些什么怎么如何怎样为啥哪能会要想可以应该请问帮一下还就都也又很太最更才得地着过"
)


def cjk_content(runs: Iterable[str]) -> tuple[set[str], set[str]]:
    """The content characters of CJK runs (particles and question words aside) and their pairs of adjacent
    content characters: "容器" and "虚拟", not "怎么" or "肉怎". Anything else in a run (a space) splits it."""
    chars: set[str] = set()
    pairs: set[str] = set()
    for run in runs:
        kept = [c if c not in _CJK_FUNCTION else " " for c in run]
        chars.update(c for c in kept if c != " ")
        pairs.update(a + b for a, b in itertools.pairwise(kept) if a != " " and b != " ")
    return chars, pairs


def _content(u: Units) -> frozenset[str]:
    chars, _ = cjk_content(_CJK_RUN.findall(u.text))
    return frozenset(chars | {w for w in u.words if w not in _FILLERS})


def _bigrams(u: Units) -> frozenset[str]:
    return frozenset(cjk_content(_CJK_RUN.findall(u.text))[1])


def _overlap(a: Units, b: Units) -> float:
    """The share of content characters (and Latin words) the two questions share; under half, they must
    also share a word of two characters, or they are taken for different questions."""
    ca, cb = _content(a), _content(b)
    share = len(ca & cb) / max(1, min(len(ca), len(cb)))
    if (
        share < 0.5
        and not (_bigrams(a) & _bigrams(b))
        and not ({w for w in a.words if w not in _FILLERS} & set(b.words))
    ):
        return 0.0
    return share


def _superlatives(u: Units) -> frozenset[str]:
    return frozenset(m for m in _ZH_SUPERLATIVE.findall(u.cjk)) | frozenset(w for w in u.words if w in _EN_SUPERLATIVES)


_ZH_SUPERLATIVE = re.compile(r"最[\u4e00-\u9fff]")
_EN_SUPERLATIVES = frozenset(
    """largest biggest smallest longest shortest highest lowest tallest deepest oldest newest youngest fastest
    slowest cheapest heaviest lightest hottest coldest richest poorest busiest closest farthest furthest
    earliest latest strongest weakest""".split()
)
