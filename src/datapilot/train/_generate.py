"""Question -> SQL training pairs written from a database's own schema and values (DB-GPT-Hub / Spider style).

``generate_pairs(connector, db_id)`` reads the schema, profiles every table with bounded queries (a
``LIMIT`` sample of rows and ``SELECT DISTINCT ... LIMIT`` for text columns, never a full scan of a large
table), and instantiates some thirty template families over the real tables, columns, values and
foreign keys: counts, filters on real values, numeric thresholds taken from the data, aggregates overall
and per group, top-k, HAVING, DISTINCT, joins along foreign keys (one and two hops), dates (years,
months, per-year / per-month counts), products of two columns (with a ``(1 - discount)`` factor), nested
queries (``NOT IN``, ``> (SELECT AVG ...)``, both-years), flags, AND filters, percentages, text
matches, self-joins and NULL checks. Every query is written in the connector's dialect (date functions
are transpiled with sqlglot from their SQLite form), checked with ``check_read_only``, run read-only
with a timeout, and kept only when its result is meaningful (rows, not all NULL, short lists, no ties
at a LIMIT).

Each query gets ``phrasings`` questions per language (English and Chinese), from several wordings per
family, with identifiers turned into words (``unit_price`` -> "unit price", ``order_items`` -> "order
items"), synonyms from column comments ("list price, USD" -> "price", "list price"), and a built-in
glossary for Chinese that falls back to the English words. Values appear as in the data. Pairs are
deduplicated, balanced across families (round-robin) and capped.

``split_pairs`` splits by SQL (all phrasings of one query on one side), ``check_no_leakage`` / ``leaked``
drop pairs whose question or SQL is in an evaluation set, and ``write_spider`` writes the Spider layout
(``train.json``, ``dev.json``, ``tables.json``, ``gold.txt``, ``database/<db_id>/<db_id>.sqlite``);
``export_sqlite`` copies a non-SQLite source's schema and a bounded number of rows into a SQLite file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import random
import re
import sqlite3
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import sqlglot
from sqlglot.errors import SqlglotError

from datapilot.core.errors import InvalidRequestError
from datapilot.datasource import (
    ColumnInfo,
    Connector,
    ForeignKey,
    QueryResult,
    TableInfo,
    check_read_only,
    jsonable,
    writing_database,
)
from datapilot.text2sql import RESERVED, difficulty_of, table_aliases

LANGUAGES = ("en", "zh")
SAMPLE_ROWS = 2000  # rows read per table to profile it
DISTINCT_LIMIT = 61  # distinct values read per text column (a column with more is not a category)
FULL_DISTINCT_ROWS = 50_000  # above this many rows, distinct values come from the sample only
LIST_MAX = 200  # a question answered by a list: at most this many rows (unless the query has a LIMIT)
MAX_CATEGORIES = 40
MAX_GROUPS = 25  # GROUP BY columns with at most this many values
EXPORT_ROWS = 10_000  # rows per table copied by ``export_sqlite``


@dataclass(slots=True)
class Pair:
    """One training example. ``query`` is in the source's dialect; ``sqlite_query`` is the same query
    in SQLite's, set only when the source is not SQLite (for the exported Spider database)."""

    question: str
    query: str
    db_id: str
    language: str
    template: str
    difficulty: str
    sqlite_query: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "db_id": self.db_id,
            "question": self.question,
            "query": self.query,
            "difficulty": self.difficulty,
            "language": self.language,
            "template": self.template,
        }


# =====================================================================================================
# Words: English names for identifiers, plurals, and a glossary for Chinese
# =====================================================================================================

# Common database and business words in Chinese. Phrases (several words) win over single words; a word
# not listed stays in English. Keys are singular, lower case.
GLOSSARY: dict[str, str] = {
    # people and organisations
    "customer": "客户", "client": "客户", "user": "用户", "account": "账户", "member": "会员", "person": "人员",
    "people": "人员", "employee": "员工", "staff": "员工", "worker": "员工", "manager": "经理", "boss": "上司",
    "supervisor": "主管", "owner": "所有者", "agent": "代理", "sales rep": "销售代表", "salesperson": "销售员",
    "representative": "代表", "supplier": "供应商", "vendor": "供应商", "seller": "卖家", "buyer": "买家",
    "partner": "合作伙伴", "company": "公司", "organization": "组织", "contact": "联系人", "team": "团队",
    "department": "部门", "division": "事业部", "branch": "分支机构", "office": "办公室", "store": "门店",
    "shop": "商店", "warehouse": "仓库", "manufacturer": "生产厂家", "brand": "品牌", "publisher": "出版社",
    "author": "作者", "artist": "艺术家", "actor": "演员", "director": "导演", "player": "球员", "coach": "教练",
    "club": "俱乐部", "league": "联赛", "student": "学生", "teacher": "教师", "instructor": "讲师",
    "professor": "教授", "school": "学校", "university": "大学", "college": "学院", "patient": "患者",
    "doctor": "医生", "physician": "医师", "nurse": "护士", "clinic": "诊所", "hospital": "医院",
    "pharmacy": "药房", "driver": "司机", "passenger": "乘客", "guest": "客人", "host": "房东",
    "tenant": "租户", "visitor": "访客", "follower": "粉丝", "subscriber": "订阅者", "candidate": "候选人",
    "applicant": "申请人", "volunteer": "志愿者", "donor": "捐赠者",
    # commerce
    "order": "订单", "order item": "订单明细", "order line": "订单明细", "line item": "明细", "item": "商品",
    "product": "产品", "goods": "商品", "merchandise": "商品", "category": "类别", "subcategory": "子类别",
    "price": "价格", "unit price": "单价", "list price": "标价", "price charged": "成交价",
    "unit cost": "单位成本", "purchase cost": "采购成本", "cost": "成本", "amount": "金额",
    "total": "总额", "total amount": "总金额", "subtotal": "小计", "discount": "折扣", "tax": "税费",
    "tax rate": "税率", "fee": "费用", "charge": "费用", "fare": "票价", "shipping": "运输",
    "shipping cost": "运费", "shipping fee": "运费", "freight": "运费", "delivery": "配送", "shipment": "发货",
    "payment": "付款", "invoice": "发票", "receipt": "收据", "transaction": "交易", "sale": "销售",
    "revenue": "收入", "income": "收入", "profit": "利润", "margin": "利润率", "expense": "支出",
    "budget": "预算", "balance": "余额", "credit": "信用", "credit limit": "信用额度", "debt": "债务",
    "loan": "贷款", "interest": "利息", "interest rate": "利率", "currency": "货币", "quantity": "数量",
    "stock": "库存", "inventory": "库存", "stock level": "库存量", "unit": "单位", "sku": "SKU",
    "segment": "细分市场", "market": "市场", "channel": "渠道", "campaign": "营销活动", "promotion": "促销",
    "coupon": "优惠券", "cart": "购物车", "refund": "退款", "return": "退货", "rating": "评分",
    "review": "评价", "score": "分数", "rank": "排名", "subscription": "订阅", "plan": "计划",
    "membership": "会员资格", "loyalty point": "积分", "point": "积分", "contract": "合同", "deal": "交易",
    "lead": "潜在客户", "opportunity": "商机", "asset": "资产", "purchase": "采购", "purchase order": "采购单",
    # work
    "salary": "工资", "wage": "工资", "pay": "薪酬", "bonus": "奖金", "commission": "佣金",
    "job": "职位", "job title": "职位", "title": "职位", "position": "职位", "role": "角色",
    "level": "级别", "grade": "等级", "seniority": "资历", "project": "项目", "task": "任务",
    "hour": "小时", "hours worked": "工时", "shift": "班次", "leave": "请假", "attendance": "出勤",
    "skill": "技能", "experience": "经验", "performance": "绩效",
    # places
    "region": "地区", "sales region": "销售地区", "area": "区域", "zone": "区域", "country": "国家",
    "nation": "国家", "state": "州", "province": "省份", "city": "城市", "town": "城镇", "district": "区",
    "county": "县", "street": "街道", "address": "地址", "postal code": "邮政编码", "zip code": "邮政编码",
    "zip": "邮编", "location": "位置", "site": "站点", "continent": "大洲", "territory": "区域",
    "latitude": "纬度", "longitude": "经度", "floor": "楼层", "room": "房间", "building": "楼宇",
    "station": "车站", "airport": "机场", "port": "港口", "route": "路线", "venue": "场馆",
    "stadium": "体育场",
    # time
    "date": "日期", "time": "时间", "year": "年份", "month": "月份", "week": "周", "day": "天",
    "quarter": "季度", "season": "赛季", "timestamp": "时间戳", "duration": "时长", "period": "期间",
    "start": "开始", "end": "结束", "start date": "开始日期", "end date": "结束日期", "due date": "截止日期",
    "deadline": "截止日期", "birth": "出生", "birth date": "出生日期", "birthday": "生日",
    "date of birth": "出生日期", "hire": "入职", "hired": "入职", "hire date": "入职日期", "signup": "注册",
    "sign up": "注册", "registration": "注册", "registered": "注册", "register": "注册", "created": "创建",
    "creation": "创建", "updated": "更新", "modified": "修改", "opened": "开业", "closed": "关闭",
    "order date": "下单日期", "ship date": "发货日期", "shipped date": "发货日期", "delivery date": "送达日期",
    "payment date": "付款日期", "join date": "加入日期", "joined": "加入", "release": "发行",
    "release date": "发行日期", "published": "出版", "publication": "出版", "expiry": "到期",
    "expiry date": "到期日期", "expiration date": "到期日期", "visit date": "就诊日期", "age": "年龄",
    # descriptions
    "name": "名称", "first name": "名", "last name": "姓", "given name": "名", "family name": "姓",
    "surname": "姓", "full name": "姓名", "middle name": "中间名", "company name": "公司名称",
    "contact name": "联系人姓名", "product name": "产品名称", "nickname": "昵称", "username": "用户名",
    "email": "邮箱", "phone": "电话", "phone number": "电话号码", "mobile": "手机", "fax": "传真",
    "website": "网站", "url": "网址", "gender": "性别", "sex": "性别", "status": "状态", "state code": "州代码",
    "type": "类型", "kind": "种类", "class": "类别", "group": "组", "tier": "等级", "label": "标签",
    "tag": "标签", "description": "描述", "note": "备注", "comment": "评论", "remark": "备注",
    "code": "代码", "id": "编号", "number": "编号", "count": "数量", "size": "尺寸", "color": "颜色",
    "colour": "颜色", "weight": "重量", "height": "身高", "width": "宽度", "length": "长度", "depth": "深度",
    "volume": "体积", "capacity": "容量", "population": "人口", "distance": "距离", "speed": "速度",
    "temperature": "温度", "percentage": "百分比", "percent": "百分比", "rate": "比率", "ratio": "比例",
    "share": "份额", "fraction": "比例", "value": "数值", "language": "语言", "version": "版本",
    "model": "型号", "material": "材料", "source": "来源", "platform": "平台", "device": "设备",
    "priority": "优先级", "severity": "严重程度", "reason": "原因", "result": "结果", "outcome": "结果",
    "method": "方式", "mode": "模式", "format": "格式", "genre": "类型", "specialty": "专科",
    "medical specialty": "医学专科",
    # medicine
    "appointment": "预约", "appointment date": "预约日期", "visit": "就诊", "admission": "入院",
    "prescription": "处方", "medication": "药品", "medicine": "药品", "drug": "药物", "dose": "剂量",
    "dosage": "剂量", "diagnosis": "诊断", "treatment": "治疗", "symptom": "症状", "complaint": "主诉",
    "chief complaint": "主诉", "insurance": "保险", "insurance plan": "保险计划", "consultation": "问诊",
    "consultation fee": "诊费", "fee charged": "收费金额", "days supply": "用药天数", "test": "检查",
    "lab test": "化验", "ward": "病房", "bed": "床位", "surgery": "手术", "allergy": "过敏",
    "blood type": "血型",
    # education
    "course": "课程", "class name": "班级名称", "subject": "科目", "major": "专业", "enrollment": "选课",
    "exam": "考试", "credit hour": "学时", "semester": "学期", "term": "学期", "homework": "作业",
    "assignment": "作业", "gpa": "平均绩点",
    # media and leisure
    "book": "书籍", "movie": "电影", "film": "电影", "song": "歌曲", "album": "专辑", "track": "曲目",
    "playlist": "播放列表", "episode": "剧集", "show": "节目", "game": "比赛", "match": "比赛",
    "goal": "进球", "event": "活动", "ticket": "门票", "seat": "座位", "flight": "航班", "airline": "航空公司",
    "hotel": "酒店", "booking": "预订", "reservation": "预订", "trip": "行程", "tour": "旅游",
    "vehicle": "车辆", "car": "汽车", "post": "帖子", "message": "消息", "like": "点赞", "view": "浏览量",
    "click": "点击", "session": "会话", "page": "页面", "article": "文章", "photo": "照片", "video": "视频",
    "library": "图书馆", "loan date": "借出日期",
    # flags and states (adjectives)
    "discontinued": "已停产", "active": "活跃", "inactive": "不活跃", "deleted": "已删除", "enabled": "已启用",
    "disabled": "已停用", "verified": "已验证", "paid": "已支付", "shipped": "已发货", "delivered": "已送达",
    "cancelled": "已取消", "canceled": "已取消", "completed": "已完成", "approved": "已批准",
    "archived": "已归档", "available": "可用", "public": "公开", "featured": "推荐", "vip": "VIP",
    "premium": "高级", "refunded": "已退款", "returned": "已退货", "online": "线上", "remote": "远程",
}  # fmt: skip
# Words that read differently in a clinic or hospital schema.
MEDICAL_GLOSSARY = {"department": "科室", "title": "职称", "visit": "就诊", "fee": "费用"}
_MEDICAL_HINTS = {"patient", "doctor", "physician", "clinic", "hospital", "nurse", "prescription", "diagnosis"}

# Abbreviations in identifiers, spelled out for questions.
ABBREVIATIONS = {
    "qty": "quantity", "amt": "amount", "desc": "description", "dob": "date of birth", "cnt": "count",
    "pct": "percentage", "addr": "address", "dept": "department", "emp": "employee", "cust": "customer",
    "prod": "product", "num": "number", "no": "number", "nbr": "number", "yr": "year", "mo": "month",
    "dt": "date", "ts": "timestamp", "tel": "phone", "msg": "message", "img": "image", "avg": "average",
    "max": "maximum", "min": "minimum", "mgr": "manager", "cat": "category", "org": "organization",
    "info": "information", "ref": "reference", "cty": "city", "ctry": "country",
}  # fmt: skip
_TABLE_PREFIXES = {"tbl", "tb", "t", "dim", "fact", "ref", "lkp", "lookup", "stg"}
_UNCOUNTABLE = {
    "staff", "data", "information", "equipment", "inventory", "stock", "news", "feedback", "personnel",
    "software", "hardware", "metadata", "media", "series", "species", "music", "furniture", "luggage",
    "baggage", "mail", "money", "research", "traffic", "weather", "advice", "evidence", "knowledge",
    "sheep", "fish", "deer", "aircraft", "police", "merchandise", "clothing", "freight", "insurance",
}  # fmt: skip
_IRREGULAR = {
    "person": "people", "child": "children", "man": "men", "woman": "women", "mouse": "mice", "foot": "feet",
    "tooth": "teeth", "goose": "geese", "analysis": "analyses", "diagnosis": "diagnoses", "thesis": "theses",
    "crisis": "crises", "criterion": "criteria", "datum": "data", "matrix": "matrices", "status": "statuses",
    "bus": "buses", "campus": "campuses", "address": "addresses", "leaf": "leaves", "life": "lives",
    "wife": "wives", "knife": "knives", "half": "halves", "shelf": "shelves", "quiz": "quizzes",
    "hero": "heroes", "potato": "potatoes", "tomato": "tomatoes", "movie": "movies", "cookie": "cookies",
    "index": "indexes", "axis": "axes", "bonus": "bonuses", "virus": "viruses", "census": "censuses",
    "genus": "genera", "class": "classes", "box": "boxes", "tax": "taxes", "branch": "branches",
}  # fmt: skip
_SINGULAR = {v: k for k, v in _IRREGULAR.items()}

_WORD_SPLIT = re.compile(r"[^0-9A-Za-z\u3400-\u4dbf\u4e00-\u9fff]+")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def split_words(identifier: str) -> list[str]:
    """``unitPrice`` / ``unit_price`` / ``Unit Price`` -> ``["unit", "price"]``; CJK names stay whole."""
    text = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", identifier)
    text = re.sub(r"(?<=[A-Z])(?=[A-Z][a-z])", " ", text)
    return [w.lower() for w in _WORD_SPLIT.split(text) if w]


def singular(word: str) -> str:
    if word in _UNCOUNTABLE or word in _IRREGULAR or _CJK.search(word):
        return word
    if word in _SINGULAR:
        return _SINGULAR[word]
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "shes", "ches", "xes", "zzes")):
        return word[:-2]
    if word.endswith(("ss", "us", "is")) or len(word) <= 3:
        return word
    if word.endswith("s"):
        return word[:-1]
    return word


def plural(word: str) -> str:
    if word in _UNCOUNTABLE or _CJK.search(word):
        return word
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if word in _SINGULAR:
        return word
    if re.search(r"[^aeiou]y$", word):
        return word[:-1] + "ies"
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    return word + "s"


def plural_phrase(phrase: str) -> str:
    """The plural of a noun phrase: its last word inflected ("unit price" -> "unit prices")."""
    words = phrase.split(" ")
    if not words or words[-1] in ("id", "ID") or words[-1].endswith("'s"):
        return phrase + ("s" if words and words[-1] in ("id", "ID") else "")
    if len(words) >= 3 and words[-2] == "of":  # "date of birth" -> "dates of birth"
        return " ".join([*words[:-3], plural(words[-3]), *words[-2:]])
    return " ".join([*words[:-1], plural(words[-1])])


def article(phrase: str) -> str:
    """``a`` or ``an`` for ``phrase``."""
    w = phrase.lower()
    if w.startswith(("uni", "use", "usu", "eu", "one", "ur")):
        return "a"
    if w.startswith(("hour", "honest", "honor")) or (w[:1] in "aeiou" and w):
        return "an"
    return "a"


def expand(words: list[str]) -> list[str]:
    out: list[str] = []
    for w in words:
        out.extend(ABBREVIATIONS.get(w, w).split(" "))
    return out


class Glossary:
    """English words and phrases to Chinese, with a schema's context (clinic words) applied."""

    def __init__(self, medical: bool = False) -> None:
        self.words = dict(GLOSSARY)
        if medical:
            self.words.update(MEDICAL_GLOSSARY)

    def lookup(self, phrase: str) -> str | None:
        if phrase in self.words:
            return self.words[phrase]
        words = phrase.split(" ")
        sing = " ".join([*words[:-1], singular(words[-1])])
        return self.words.get(sing)

    def zh(self, phrase: str) -> str:
        """``phrase`` in Chinese, longest known phrases first; unknown words stay in English."""
        words = [w for w in phrase.lower().replace("'s", "").split(" ") if w and w not in ("the", "a", "an")]
        if len(words) >= 3 and words[0] == "number" and words[1] == "of":
            return self.zh(" ".join(words[2:])) + "数量"
        if words and words[0] in ("date", "time") and len(words) > 1:  # "date registered" -> 注册日期
            words = [*words[1:], words[0]]
        parts: list[str] = []
        i = 0
        while i < len(words):
            for n in (4, 3, 2, 1):
                if i + n > len(words):
                    continue
                hit = self.lookup(" ".join(words[i : i + n]))
                if hit is not None:
                    parts.append(hit)
                    i += n
                    break
            else:
                if words[i] not in ("of", "on", "at", "by", "per", "is", "has", "was", "in"):
                    parts.append(words[i])
                i += 1
        out = ""
        for p in parts:
            if out and not _CJK.search(out[-1]) and not _CJK.search(p[0]):
                out += " "
            out += p
        return out or phrase

    def known(self, phrase: str) -> bool:
        return not re.search(r"[A-Za-z]{2,}", self.zh(phrase).replace("SKU", "").replace("VIP", ""))


# Past participles for date columns: ``hire_date`` -> employees "hired" in 2024.
DATE_VERBS = {
    "hire": "hired", "hiring": "hired", "signup": "signed up", "sign": "signed up", "registration": "registered",
    "register": "registered", "registered": "registered", "birth": "born", "born": "born", "open": "opened",
    "opened": "opened", "opening": "opened", "create": "created", "created": "created", "creation": "created",
    "start": "started", "started": "started", "end": "ended", "ended": "ended", "join": "joined",
    "joined": "joined", "release": "released", "released": "released", "publish": "published",
    "published": "published", "publication": "published", "ship": "shipped", "shipped": "shipped",
    "delivery": "delivered", "delivered": "delivered", "update": "updated", "updated": "updated",
    "modified": "modified", "payment": "paid", "paid": "paid", "close": "closed", "closed": "closed",
    "purchase": "purchased", "purchased": "purchased", "enroll": "enrolled", "enrollment": "enrolled",
    "admission": "admitted", "admitted": "admitted", "discharge": "discharged", "issue": "issued",
    "issued": "issued", "submit": "submitted", "submitted": "submitted", "approve": "approved",
    "approved": "approved", "sold": "sold", "sale": "sold", "booking": "booked", "booked": "booked",
}  # fmt: skip
DATE_VERBS_ZH = {
    "hired": "入职", "signed up": "注册", "registered": "注册", "born": "出生", "opened": "开业",
    "created": "创建", "started": "开始", "ended": "结束", "joined": "加入", "released": "发行",
    "published": "出版", "shipped": "发货", "delivered": "送达", "updated": "更新", "modified": "修改",
    "paid": "付款", "closed": "关闭", "purchased": "购买", "enrolled": "入学", "admitted": "入院",
    "discharged": "出院", "issued": "签发", "submitted": "提交", "approved": "批准", "sold": "售出",
    "booked": "预订",
}  # fmt: skip
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
    "November", "December"
]  # fmt: skip
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine",
    10: "ten"
}  # fmt: skip
NUMBER_WORDS_ZH = {2: "两", 3: "三", 4: "四", 5: "五", 6: "六", 7: "七", 8: "八", 9: "九", 10: "十"}

_LOCATION_WORDS = {"area", "city", "continent", "country", "county", "district", "location", "nation", "province",
    "region", "state", "territory", "town", "zone"
}  # fmt: skip
_GROUP_WORDS = {"category", "channel", "class", "department", "division", "family", "genre", "group", "kind",
    "level", "line", "plan", "section", "segment", "specialty", "subcategory", "team", "tier", "type"
}  # fmt: skip
_STATUS_WORDS = {"status", "state", "stage", "condition"}
_PRICE_WORDS = {"price", "fare"}
_PAY_WORDS = {"salary", "wage", "pay", "income", "earnings"}
_COUNT_WORDS = {"quantity", "qty", "units", "count", "pieces", "packs", "seats", "nights", "volume", "items"}
_MONEY_WORDS = {"price", "cost", "fee", "fare", "charge", "rate"}  # per unit: a quantity times one makes sense
_DISCOUNT_WORDS = {"discount", "rebate", "markdown", "off"}
_NO_SUM_WORDS = {"age", "code", "discount", "floor", "fraction", "grade", "lat", "latitude", "level", "lng", "lon",
    "longitude", "number", "pct", "percent", "percentage", "phone", "price", "rank", "rate", "rating", "ratio",
    "score", "share", "speed", "temperature", "unit", "year", "zip"
}  # fmt: skip
_STOPWORDS = {"the", "and", "for", "with", "from", "inc", "ltd", "co", "llc", "of", "mg"}


# =====================================================================================================
# The schema as the templates see it
# =====================================================================================================

_TEXT_TYPES = ("CHAR", "TEXT", "STRING", "CLOB", "VARCHAR", "NVARCHAR", "ENUM")
_NUMBER_TYPES = ("INT", "REAL", "FLOAT", "DOUBLE", "NUMERIC", "DECIMAL", "NUMBER", "MONEY")
_DATE_TYPES = ("DATE", "TIMESTAMP")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?([+-]\d{2}:?\d{2}|Z)?$")
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _type_kind(type_name: str) -> str:
    """``text`` / ``number`` / ``boolean`` / ``time`` / ``others`` (Spider's column types)."""
    t = type_name.upper()
    if "BOOL" in t:
        return "boolean"
    if any(k in t for k in _DATE_TYPES) or t in ("TIME", "DATETIME", "YEAR") or "DATETIME" in t:
        return "time"
    if any(k in t for k in _NUMBER_TYPES) or t in ("BIT", "SERIAL", "BIGSERIAL"):
        return "number"
    if any(k in t for k in _TEXT_TYPES) or t in ("", "UUID", "JSON"):
        return "text" if t not in ("UUID", "JSON") else "others"
    return "others"


@dataclass(slots=True)
class Col:
    info: ColumnInfo
    sql: str  # the identifier, quoted where the dialect needs it
    words: list[str]  # the identifier's English words
    names: list[str]  # English names for questions, the plainest first
    zh: str
    kind: str  # key, flag, date, number, category, text, other
    values: list[Any] = field(default_factory=list)  # distinct values (text), sorted sample (numbers/dates)
    counts: Counter[Any] = field(default_factory=Counter)  # value frequencies in the sample
    distinct: int = 0
    nulls: int = 0  # NULLs in the sample
    text_dates: bool = False  # a text column holding ISO dates
    ratio: bool = False  # numbers between 0 and 1
    unique: bool = False  # no value repeats in the sample

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def last(self) -> str:
        return self.words[-1] if self.words else ""

    def has(self, words: set[str]) -> bool:
        return bool(words & set(self.words))


@dataclass(slots=True)
class Tab:
    info: TableInfo
    sql: str
    alias: str
    sg: str  # English singular ("order item")
    pl: str  # English plural ("order items")
    zh: str
    cols: list[Col]
    rows: int  # the row count (the schema's, or the sample's)
    sampled: int  # rows in the sample
    pk: Col | None = None
    label: list[Col] = field(default_factory=list)  # the columns that name a row (name; first + last)
    label_is_key: bool = False
    sample: list[dict[str, Any]] = field(default_factory=list)  # the sampled rows, by column name

    @property
    def name(self) -> str:
        return self.info.name

    def col(self, name: str) -> Col | None:
        return next((c for c in self.cols if c.name == name), None)

    def of_kind(self, *kinds: str) -> list[Col]:
        return [c for c in self.cols if c.kind in kinds]

    @property
    def categories(self) -> list[Col]:
        return [c for c in self.cols if c.kind == "category" and c not in self.label]


@dataclass(slots=True)
class Link:
    """``child.fk`` references ``parent.pk``: the child's ``role`` (``orders.customer_id`` -> "customer")."""

    child: Tab
    fk: Col
    parent: Tab
    pk: Col
    role: str
    role_zh: str

    @property
    def self_ref(self) -> bool:
        return self.child is self.parent


def quote_ident(name: str, dialect: str) -> str:
    q = "`" if dialect in ("mysql", "mariadb") else '"'
    plain = bool(_PLAIN.match(name)) and name.upper() not in RESERVED
    if dialect in ("postgres", "postgresql"):
        plain = plain and name == name.lower()
    return name if plain else q + name.replace(q, q + q) + q


def sql_literal(value: Any, dialect: str) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return fmt_number(value)
    text = str(jsonable(value))
    if dialect in ("mysql", "mariadb"):
        text = text.replace("\\", "\\\\")
    return "'" + text.replace("'", "''") + "'"


def fmt_number(value: float) -> str:
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return f"{value:.6g}" if abs(value) < 1e6 else f"{value:.2f}"


def nice_number(x: float, integer: bool) -> float:
    """``x`` rounded to two significant digits (13.39 -> 13, 117000 -> 120000, 0.047 -> 0.047)."""
    if x == 0:
        return 0
    mag = 10 ** (math.floor(math.log10(abs(x))) - 1)
    v = round(x / mag) * mag
    v = round(v, 6)
    return round(v) if integer or float(v).is_integer() else v


def _iso(value: Any) -> str:
    return str(jsonable(value))


def _good_value(v: Any) -> bool:
    """A text value a question can quote: short, one line, not blank."""
    if not isinstance(v, str):
        return False
    s = v.strip()
    return bool(s) and s == v and len(s) <= 48 and "\n" not in s and "\t" not in s


def _comment_names(col_words: list[str], comment: str | None, table_words: set[str]) -> list[str]:
    """Extra names from a column comment: its first clause when it names the same thing ("list price" for
    ``unit_price``), and the column's head noun when the comment confirms it ("price")."""
    if not comment:
        return []
    clause = re.split(r"[;,(]| - ", comment, maxsplit=1)[0].strip().lower()
    clause = re.sub(r"^(the|a|an)\s+", "", clause)
    words = clause.split()
    out: list[str] = []
    bad = ("yyyy", " or ", " if ", "e.g", "usd", "cny", "eur", "unless", "per ", "in ")
    shared = set(words) & (set(col_words) | table_words)
    if 1 <= len(words) <= 3 and not re.search(r"\d", clause) and not any(b in f" {clause} " for b in bad) and shared:
        if re.fullmatch(r"[a-z' ]+", clause) and clause != " ".join(col_words):
            out.append(clause.replace("'s", "").replace("  ", " ").strip())
    if len(col_words) >= 2 and col_words[-1] in set(re.findall(r"[a-z]+", comment.lower())):
        out.append(col_words[-1])
    return out


def _column_words(col: ColumnInfo, kind: str) -> list[str]:
    words = expand(split_words(col.name)) or [col.name]
    if kind == "date" and len(words) >= 2 and words[-1] in ("on", "at"):
        # registered_on -> "date registered", created_at -> "time created"
        return ["date" if words[-1] == "on" else "time", *words[:-1]]
    if kind == "flag" and len(words) >= 2 and words[0] in ("is", "has", "was"):
        return words
    return words


class _Schema:
    """The profiled schema: tables, columns with kinds and values, foreign-key links, words."""

    def __init__(self, tables: list[Tab], links: list[Link], glossary: Glossary, dialect: str) -> None:
        self.tables = tables
        self.links = links
        self.glossary = glossary
        self.dialect = dialect
        self.by_name = {t.name: t for t in tables}


def infer_keys(schema: list[TableInfo], *, joins: bool = False) -> list[TableInfo]:
    """``schema`` with primary keys guessed from names when it declares none (DuckDB files and CSV sources):
    ``id`` or ``<table>_id`` is a table's key. With ``joins``, foreign keys too when none are declared:
    ``<table>_id`` elsewhere references that table. (The SQL grammar only joins along declared keys, so
    guessed joins are opt-in.)"""
    out = list(schema)
    if not any(c.primary_key for t in out for c in t.columns):
        keyed = []
        for t in out:
            sg = singular(split_words(t.name)[-1]) if split_words(t.name) else t.name.lower()
            names = {"id", f"{sg}_id", f"{t.name.lower()}_id", f"{sg}id"}
            pk = next((c for c in t.columns if c.name.lower() in names), None)
            if pk is None:
                keyed.append(t)
                continue
            cols = [replace(c, primary_key=c is pk) for c in t.columns]
            keyed.append(replace(t, columns=cols))
        out = keyed
    if joins and not any(t.foreign_keys for t in out):
        keys: dict[str, tuple[str, str]] = {}  # "customer" -> (customers, customer_id)
        for t in out:
            pk_cols = [c for c in t.columns if c.primary_key]
            if len(pk_cols) != 1:
                continue
            words = [w for w in split_words(t.name) if w not in _TABLE_PREFIXES] or split_words(t.name)
            if not words:
                continue
            keys[" ".join([*words[:-1], singular(words[-1])])] = (t.name, pk_cols[0].name)
            keys[" ".join(words)] = (t.name, pk_cols[0].name)
        linked = []
        for t in out:
            fks = []
            for c in t.columns:
                words = split_words(c.name)
                if c.primary_key or len(words) < 2 or words[-1] != "id":
                    continue
                hit = keys.get(" ".join(words[:-1]))
                if hit and hit[0] != t.name:
                    fks.append(ForeignKey([c.name], hit[0], [hit[1]]))
            linked.append(replace(t, foreign_keys=fks) if fks else t)
        out = linked
    return out


async def _profile(connector: Connector, schema: list[TableInfo], timeout_s: float, guess_joins: bool) -> _Schema:
    dialect = connector.dialect
    schema = infer_keys(schema, joins=guess_joins)
    every_word = {w for t in schema for w in split_words(t.name)} | {
        w for t in schema for c in t.columns for w in split_words(c.name)
    }
    glossary = Glossary(medical=bool({singular(w) for w in every_word} & _MEDICAL_HINTS))
    aliases = table_aliases(schema)
    fk_cols = {(t.name, c) for t in schema for fk in t.foreign_keys for c in fk.columns}
    tabs: list[Tab] = []
    for info in schema:
        if not info.columns:
            continue
        tq = quote_ident(info.name, dialect)
        try:
            res = await connector.run(f"SELECT * FROM {tq}", limit=SAMPLE_ROWS, timeout_s=timeout_s)
        except InvalidRequestError:
            continue
        index = {name: i for i, name in enumerate(res.columns)}
        twords = [w for w in expand(split_words(info.name)) if w not in _TABLE_PREFIXES] or split_words(info.name)
        twords = twords or [info.name]
        last = twords[-1]
        if singular(last) != last or last in _SINGULAR:
            sg = " ".join([*twords[:-1], singular(last)])
            pl = " ".join(twords)
        else:
            sg = " ".join(twords)
            pl = " ".join([*twords[:-1], plural(last)])
        rows = info.row_count if info.row_count is not None else len(res.rows)
        cols: list[Col] = []
        for ci in info.columns:
            i = index.get(ci.name)
            values = [r[i] for r in res.rows] if i is not None else []
            col = await _profile_column(connector, info, ci, values, rows, (info.name, ci.name) in fk_cols, timeout_s)
            cols.append(col)
        tab = Tab(
            info, tq, aliases.get(info.name, info.name[:1].lower()), sg, pl, glossary.zh(sg), cols, rows, len(res.rows)
        )
        tab.pk = next((c for c in cols if c.info.primary_key), None)
        tab.sample = [dict(zip(res.columns, row, strict=False)) for row in res.rows]
        table_words = set(twords) | {singular(w) for w in twords}
        for c in cols:
            c.sql = quote_ident(c.name, dialect)
            c.words = _column_words(c.info, c.kind)
            base = " ".join(c.words)
            names = [base]
            if c.kind != "key":
                names += [n for n in _comment_names(c.words, c.info.comment, table_words) if n not in names]
            c.names = names
            zh_names = [glossary.zh(n) for n in names]
            c.zh = next((z for n, z in zip(names, zh_names, strict=True) if glossary.known(n)), zh_names[0])
        _pick_label(tab)
        for c in tab.label:
            c.names = c.names[:1]
            c.zh = glossary.zh(c.names[0])
        # a name used twice in one table (a synonym equal to another column's name) would be ambiguous
        seen = Counter(n for c in cols for n in c.names)
        for c in cols:
            c.names = [n for i, n in enumerate(c.names) if i == 0 or seen[n] == 1]
        tabs.append(tab)
    by_name = {t.name: t for t in tabs}
    links: list[Link] = []
    for t in tabs:
        for fk in t.info.foreign_keys:
            parent = by_name.get(fk.ref_table)
            if parent is None or len(fk.columns) != 1 or len(fk.ref_columns) != 1:
                continue
            fkc, pkc = t.col(fk.columns[0]), parent.col(fk.ref_columns[0])
            if fkc is None or pkc is None:
                continue
            words = [w for w in split_words(fkc.name) if w not in ("id", "fk", "key", "code", "ref", "no")]
            role = " ".join(expand(words)) or parent.sg
            if role in (parent.pl, parent.sg.replace(" ", "")):
                role = parent.sg
            links.append(Link(t, fkc, parent, pkc, role, glossary.zh(role)))
    return _Schema(tabs, links, glossary, dialect)


async def _profile_column(
    connector: Connector,
    table: TableInfo,
    ci: ColumnInfo,
    values: list[Any],
    rows: int,
    is_fk: bool,
    timeout_s: float,
) -> Col:
    kind_of_type = _type_kind(ci.type)
    present = [v for v in values if v is not None]
    nulls = len(values) - len(present)
    words = split_words(ci.name)
    col = Col(ci, ci.name, words, [ci.name], ci.name, "other", nulls=nulls)
    hashable = [v for v in present if isinstance(v, str | int | float | bool | dt.date | dt.datetime)]
    col.counts = Counter(hashable)  # for keys: rows per referenced row (nested counts use them)
    col.distinct = len(col.counts)
    col.unique = bool(present) and col.distinct == len(present)
    if ci.primary_key or is_fk or (words and words[-1] in ("id", "uuid", "guid", "key")) or ci.name.lower() == "id":
        col.kind = "key"
        return col
    if kind_of_type == "boolean" or (
        kind_of_type == "number" and col.distinct == 2 and set(col.counts) <= {0, 1} and len(present) >= 4
    ):
        col.kind = "flag"
        return col
    if kind_of_type == "time" or (present and all(isinstance(v, dt.date) for v in present)):
        if present and all(isinstance(v, dt.date | str) and _ISO_DATE.match(_iso(v)) for v in present):
            col.kind = "date"
            col.values = sorted(_iso(v) for v in present)
        return col
    if kind_of_type == "number":
        nums = [float(v) for v in present if isinstance(v, int | float) and not isinstance(v, bool)]
        if len(nums) >= 3 and len(set(nums)) >= 3:
            col.kind = "number"
            col.values = sorted(nums)
            col.ratio = 0 <= min(nums) and max(nums) <= 1 and any(not x.is_integer() for x in nums)
        return col
    if kind_of_type != "text":
        return col
    strings = [v for v in present if isinstance(v, str)]
    if strings and len(strings) == len(present) and all(_ISO_DATE.match(s) for s in strings):
        col.kind = "date"
        col.text_dates = True
        col.values = sorted(strings)
        return col
    if not strings:
        return col
    distinct = sorted(set(strings))
    if rows <= FULL_DISTINCT_ROWS and rows > len(values):
        q, t = quote_ident(ci.name, connector.dialect), quote_ident(table.name, connector.dialect)
        try:
            res = await connector.run(
                f"SELECT DISTINCT {q} FROM {t} WHERE {q} IS NOT NULL", limit=DISTINCT_LIMIT, timeout_s=timeout_s
            )
            distinct = sorted({r[0] for r in res.rows if isinstance(r[0], str)})
        except InvalidRequestError:
            pass
    col.values = distinct
    col.distinct = max(col.distinct, len(distinct))
    mean_len = sum(len(s) for s in strings) / len(strings)
    known = max(len(present), min(rows, len(present) * 10)) if rows > len(values) else len(present)
    if 2 <= len(distinct) <= MAX_CATEGORIES and len(distinct) <= 0.6 * known and mean_len <= 40:
        col.kind = "category"
    else:
        col.kind = "text"
    return col


def _pick_label(tab: Tab) -> None:
    """The columns that name a row: ``name``; first and last name; ``<table>_name``; ``title``; a ``*name``
    column; else the first mostly-unique text column; else the primary key (then questions say "ID")."""
    texts = [c for c in tab.cols if c.kind in ("text", "category")]
    by = {c.name.lower(): c for c in texts}
    sg_words = tab.sg.replace(" ", "_")
    pairs = [
        ("first_name", "last_name"),
        ("firstname", "lastname"),
        ("given_name", "family_name"),
        ("first_name", "surname"),
        ("forename", "surname"),
    ]
    label: list[Col] = []
    if "name" in by:
        label = [by["name"]]
    elif any(a in by and b in by for a, b in pairs):
        a, b = next((a, b) for a, b in pairs if a in by and b in by)
        label = [by[a], by[b]]
    else:
        for key in (f"{sg_words}_name", "full_name", "display_name", "title"):
            if key in by and (key != "title" or by[key].kind == "text"):
                label = [by[key]]
                break
        if not label:
            named = [c for c in texts if c.words and c.words[-1] == "name"]
            if named:
                label = [named[0]]
        if not label:
            unique = [c for c in texts if c.kind == "text" and c.unique and c.values]
            if unique:
                label = [unique[0]]
    if label:
        tab.label = label
    elif tab.pk is not None:
        tab.label = [tab.pk]
        tab.label_is_key = True


# =====================================================================================================
# Phrases: how a condition, a label or a number reads
# =====================================================================================================

Rows = list[tuple[Any, ...]]


@dataclass(slots=True)
class Cond:
    """A WHERE condition and the ways a question says it."""

    sql: str
    mod: list[str] = field(default_factory=list)  # after a plural noun: "whose status is cancelled", "in Seattle"
    mod_sg: list[str] = field(default_factory=list)  # after a singular noun
    pred: list[str] = field(default_factory=list)  # after a plural subject: "have status cancelled", "are in X"
    with_: list[str] = field(default_factory=list)  # after "with": "status cancelled", "a price above 5"
    pre: list[str] = field(default_factory=list)  # adjectives before the noun: "cancelled"
    zh: list[str] = field(default_factory=list)  # before 的 + noun: "状态为cancelled"
    zh_pred: list[str] = field(default_factory=list)  # after the noun: "的状态是cancelled", "在Seattle"

    def both(self) -> None:
        """Fill the derived forms: "with ..." modifiers and predicates."""
        self.mod += [f"with {w}" for w in self.with_ if f"with {w}" not in self.mod]
        self.mod_sg += [f"with {w}" for w in self.with_ if f"with {w}" not in self.mod_sg]
        self.pred += [f"have {w}" for w in self.with_ if f"have {w}" not in self.pred]


def _pick(rng: random.Random, options: Sequence[str]) -> str:
    return rng.choice(list(options)) if options else ""


def _shown(value: Any, quoted: bool, zh: bool = False) -> str:
    text = str(jsonable(value))
    if not quoted:
        return text
    return f"“{text}”" if zh else f"'{text}'"


def _k_en(k: int, rng: random.Random) -> str:
    return NUMBER_WORDS[k] if k in NUMBER_WORDS and rng.random() < 0.6 else str(k)


def _k_zh(k: int, rng: random.Random) -> str:
    return NUMBER_WORDS_ZH[k] if k in NUMBER_WORDS_ZH and rng.random() < 0.5 else str(k)


def _n_of(n: int, sg: str, pl: str) -> str:
    """ "5 orders", but "one order" ("more than one order", never "more than 1 orders")."""
    return f"one {sg}" if n == 1 else f"{n} {pl}"


def _label_en(tab: Tab, plural_form: bool, rng: random.Random) -> str:
    if tab.label_is_key:
        return f"{tab.sg} IDs" if plural_form else f"{tab.sg} ID"
    if len(tab.label) == 2:
        a, b = tab.label[0].words, tab.label[1].words
        if a[-1:] == b[-1:] and len(a) > 1 and len(b) > 1:
            head = plural(a[-1]) if plural_form else a[-1]
            return f"{' '.join(a[:-1])} and {' '.join(b[:-1])} {head}"
        return f"{' '.join(a)} and {' '.join(b)}"
    name = _pick(rng, tab.label[0].names)
    return plural_phrase(name) if plural_form else name


def _label_zh(tab: Tab, rng: random.Random) -> str:
    if tab.label_is_key:
        return f"{tab.zh}编号"
    if len(tab.label) == 2:
        pair = {tuple(c.name.lower() for c in tab.label)}
        if pair & {("first_name", "last_name"), ("firstname", "lastname"), ("given_name", "family_name")}:
            return _pick(rng, ["名和姓", "姓名"])
        return f"{tab.label[0].zh}和{tab.label[1].zh}"
    return tab.label[0].zh


def _label_sql(tab: Tab, alias: str = "") -> str:
    prefix = f"{alias}." if alias else ""
    return ", ".join(prefix + c.sql for c in tab.label)


def _person(tab: Tab) -> bool:
    """Rows named by first and last name are people: "their" / 他们 / 谁 rather than "its" / 它们 / 哪个."""
    return len(tab.label) == 2


def _its(tab: Tab) -> str:
    return "their" if _person(tab) else "its"


def _they_zh(tab: Tab) -> str:
    return "他们" if _person(tab) else "它们"


def _cname(col: Col, rng: random.Random) -> str:
    return _pick(rng, col.names)


def _cplural(col: Col, rng: random.Random) -> str:
    return plural_phrase(_pick(rng, col.names))


def _is_location(col: Col) -> bool:
    return col.last in _LOCATION_WORDS


def _value_word_zh(glossary: Glossary, value: str) -> str | None:
    hit = glossary.words.get(value.lower())
    return hit if hit and value.isascii() else None


def eq_cond(g: _Gen, tab: Tab, col: Col, value: Any, alias: str = "", quoted: bool = False) -> Cond:
    """``col = value`` on ``tab`` itself."""
    prefix = f"{alias}." if alias else ""
    cond = Cond(f"{prefix}{col.sql} = {sql_literal(value, g.dialect)}")
    v, vz = _shown(value, quoted), _shown(value, quoted, zh=True)
    for n in col.names:
        a = article(n)
        cond.with_ += [f"{n} {v}", f"{a} {n} of {v}"]
        cond.mod += [f"whose {n} is {v}"]
        cond.mod_sg += [f"whose {n} is {v}"]
    cond.zh += [f"{col.zh}为{vz}", f"{col.zh}是{vz}"]
    cond.zh_pred += [f"的{col.zh}是{vz}", f"的{col.zh}为{vz}"]
    text = str(value)
    if _is_location(col) and not text.isdigit():
        cond.mod += [f"in {v}", f"located in {v}"]
        cond.mod_sg += [f"in {v}"]
        cond.pred += [f"are in {v}", f"are located in {v}"]
        cond.zh += [f"在{vz}", f"位于{vz}"]
        cond.zh_pred += [f"在{vz}", f"位于{vz}"]
        if col.last in ("country", "nation"):
            cond.mod += [f"from {v}"]
            cond.pred += [f"are from {v}"]
            cond.zh += [f"来自{vz}"]
    if col.last in _GROUP_WORDS:
        for n in col.names:
            if n.split(" ")[-1] in _GROUP_WORDS:
                cond.mod += [f"in the {v} {n}"]
                cond.mod_sg += [f"in the {v} {n}"]
                cond.pred += [f"are in the {v} {n}", f"belong to the {v} {n}"]
        cond.zh += [f"{vz}{col.zh}", f"属于{vz}{col.zh}"]
        cond.zh_pred += [f"属于{vz}{col.zh}"]
    if col.last in _STATUS_WORDS and re.fullmatch(r"[a-z]+", text):
        cond.pre += [v]
        cond.mod += [f"that are {v}"]
        cond.mod_sg += [f"that is {v}"]
        cond.pred += [f"are {v}"] + ([f"have been {v}"] if text.endswith("ed") else [])
        word = _value_word_zh(g.glossary, text)
        if word:
            cond.zh += [f"{word}({vz})"]
            cond.zh_pred += [f"{word}({vz})"]
    if col.last in ("gender", "sex") and text.lower() in ("f", "m", "female", "male"):
        female = text.lower().startswith("f")
        cond.pre += ["female" if female else "male"]
        cond.zh += ["女性" if female else "男性"]
    cond.both()
    return cond


def join_cond(g: _Gen, link: Link, col: Col, value: Any, alias: str, quoted: bool = False) -> Cond:
    """``parent.col = value`` seen from the child through ``link`` ("orders whose customer is in Seattle")."""
    cond = Cond(f"{alias}.{col.sql} = {sql_literal(value, g.dialect)}")
    v, vz = _shown(value, quoted), _shown(value, quoted, zh=True)
    r, rz, ra = link.role, link.role_zh, article(link.role)
    parent = link.parent
    is_label = len(parent.label) == 1 and parent.label[0] is col and not parent.label_is_key
    for n in col.names:
        cond.mod += [f"whose {r} {n} is {v}", f"whose {r}'s {n} is {v}"]
        cond.mod_sg += [f"whose {r} {n} is {v}", f"whose {r}'s {n} is {v}"]
        cond.pred += [f"have {ra} {r} whose {n} is {v}", f"belong to {ra} {r} whose {n} is {v}"]
    cond.zh += [f"{rz}{col.zh}为{vz}", f"{rz}的{col.zh}是{vz}"]
    cond.zh_pred += [f"的{rz}{col.zh}是{vz}"]
    if _is_location(col) and not str(value).isdigit():
        cond.mod += [f"whose {r} is in {v}", f"with {ra} {r} in {v}"]
        cond.mod_sg += [f"whose {r} is in {v}"]
        cond.pred += [f"have {ra} {r} in {v}", f"belong to {ra} {r} in {v}"]
        cond.zh += [f"{rz}在{vz}", f"{rz}位于{vz}"]
        cond.zh_pred += [f"的{rz}在{vz}"]
    if col.last in _GROUP_WORDS:
        n = _pick(
            g.rng("group-word", col.name), [n for n in col.names if n.split(" ")[-1] in _GROUP_WORDS] or col.names
        )
        cond.mod += [f"whose {r} is in the {v} {n}"]
        cond.mod_sg += [f"whose {r} is in the {v} {n}"]
        cond.pred += [f"have {ra} {r} in the {v} {n}"]
        cond.zh += [f"{rz}属于{vz}{col.zh}"]
    if col.last in _STATUS_WORDS and re.fullmatch(r"[a-z]+", str(value)):
        cond.mod += [f"whose {r} is {v}"]
        cond.mod_sg += [f"whose {r} is {v}"]
    if is_label:
        cond.mod += [f"of the {r} {v}", f"whose {r} is {v}"]
        cond.mod_sg += [f"of the {r} {v}", f"whose {r} is {v}"]
        cond.pred += [f"belong to the {r} {v}"]
        cond.zh += [f"{rz}为{vz}", f"属于{rz}{vz}"]
        cond.zh_pred += [f"属于{rz}{vz}"]
    return cond


def number_cond(g: _Gen, col: Col, op: str, x: float, y: float | None = None, alias: str = "") -> Cond:
    """``col > x``, ``col < x`` or ``col BETWEEN x AND y``."""
    prefix = f"{alias}." if alias else ""
    xs, ys = fmt_number(x), fmt_number(y) if y is not None else ""
    if op == "between":
        cond = Cond(f"{prefix}{col.sql} BETWEEN {xs} AND {ys}")
    else:
        cond = Cond(f"{prefix}{col.sql} {op} {xs}")
    price, pay = col.has(_PRICE_WORDS), col.has(_PAY_WORDS)
    for n in col.names:
        a = article(n)
        if op == ">":
            cond.with_ += [
                f"{a} {n} greater than {xs}",
                f"{a} {n} above {xs}",
                f"{a} {n} of more than {xs}",
                f"{a} {n} over {xs}",
            ]
            cond.mod += [f"whose {n} is greater than {xs}", f"whose {n} exceeds {xs}"]
            cond.mod_sg += [f"whose {n} is greater than {xs}"]
        elif op == "<":
            cond.with_ += [f"{a} {n} less than {xs}", f"{a} {n} below {xs}", f"{a} {n} under {xs}"]
            cond.mod += [f"whose {n} is less than {xs}", f"whose {n} is below {xs}"]
            cond.mod_sg += [f"whose {n} is less than {xs}"]
        else:
            cond.with_ += [f"{a} {n} between {xs} and {ys}"]
            cond.mod += [f"whose {n} is between {xs} and {ys}"]
            cond.mod_sg += [f"whose {n} is between {xs} and {ys}"]
    z = col.zh
    if op == ">":
        cond.zh += [f"{z}大于{xs}", f"{z}高于{xs}", f"{z}超过{xs}"]
        cond.zh_pred += [f"的{z}大于{xs}", f"的{z}超过{xs}"]
        if price:
            cond.mod += [f"costing more than {xs}", f"that cost more than {xs}"]
            cond.pred += [f"cost more than {xs}"]
        if pay:
            cond.mod += [f"earning more than {xs}", f"who earn more than {xs}"]
            cond.pred += [f"earn more than {xs}"]
    elif op == "<":
        cond.zh += [f"{z}小于{xs}", f"{z}低于{xs}", f"{z}不到{xs}"]
        cond.zh_pred += [f"的{z}小于{xs}", f"的{z}低于{xs}"]
        if price:
            cond.mod += [f"costing less than {xs}", f"that cost less than {xs}"]
            cond.pred += [f"cost less than {xs}"]
        if pay:
            cond.mod += [f"earning less than {xs}"]
            cond.pred += [f"earn less than {xs}"]
    else:
        cond.zh += [f"{z}在{xs}到{ys}之间", f"{z}介于{xs}和{ys}之间"]
        cond.zh_pred += [f"的{z}在{xs}到{ys}之间"]
        if price:
            cond.mod += [f"costing between {xs} and {ys}"]
            cond.pred += [f"cost between {xs} and {ys}"]
    cond.both()
    return cond


_INTRANSITIVE = {"signed up", "joined", "started", "ended"}


def _were(verb: str, plural_form: bool = True) -> str:
    """ "were hired" / "was hired", but "signed up" (an intransitive verb takes no "were")."""
    if verb in _INTRANSITIVE:
        return verb
    return f"{'were' if plural_form else 'was'} {verb}"


def _date_verb(tab: Tab, col: Col) -> tuple[str | None, bool]:
    """The past participle a date column names ("hired" for ``hire_date``), and whether the column is the
    table's own date (``order_date`` in ``orders``: "orders in 2024")."""
    words = [w for w in col.words if w not in ("date", "time", "timestamp", "day", "on", "at", "dt")]
    own = bool(words) and " ".join(words) in (tab.sg, tab.sg.split(" ")[-1])
    for w in words:
        if w in DATE_VERBS:
            return DATE_VERBS[w], own
    return None, own or not words


def _date_cols(tab: Tab) -> list[Col]:
    return [c for c in tab.cols if c.kind == "date" and c.values]


def year_cond(g: _Gen, tab: Tab, col: Col, year: int, form: str, alias: str = "") -> Cond:
    """Rows of ``year``: as a range (``>= 'Y-01-01' AND < 'Y+1-01-01'``), ``strftime('%Y')`` or ``LIKE 'Y%'``."""
    c = f"{alias}.{col.sql}" if alias else col.sql
    if form == "range":
        sql = f"{c} >= '{year}-01-01' AND {c} < '{year + 1}-01-01'"
    elif form == "like":
        sql = f"{c} LIKE '{year}%'"
    else:
        sql = f"{g.year(c)} = '{year}'"
    cond = Cond(sql)
    verb, own = _date_verb(tab, col)
    for n in col.names:
        a = article(n)
        cond.with_ += [f"{a} {n} in {year}"]
        cond.mod += [f"whose {n} is in {year}", f"whose {n} falls in {year}"]
        cond.mod_sg += [f"whose {n} is in {year}"]
    cond.zh += [f"{col.zh}在{year}年"]
    cond.zh_pred += [f"的{col.zh}在{year}年"]
    if verb:
        cond.mod += [f"{verb} in {year}"]
        cond.mod_sg += [f"{verb} in {year}"]
        cond.pred += [f"{_were(verb)} in {year}"]
        vz = DATE_VERBS_ZH.get(verb)
        if vz:
            cond.zh += [f"{year}年{vz}", f"在{year}年{vz}"]
            cond.zh_pred += [f"在{year}年{vz}"]
    elif own:
        cond.mod += [f"from {year}", f"in {year}"]
        cond.mod_sg += [f"from {year}"]
        cond.zh += [f"{year}年"]
    cond.both()
    return cond


def month_cond(g: _Gen, tab: Tab, col: Col, year: int, month: int, form: str) -> Cond:
    ym = f"{year}-{month:02d}"
    nxt = f"{year + 1}-01" if month == 12 else f"{year}-{month + 1:02d}"
    if form == "range":
        sql = f"{col.sql} >= '{ym}-01' AND {col.sql} < '{nxt}-01'"
    elif form == "like":
        sql = f"{col.sql} LIKE '{ym}%'"
    else:
        sql = f"{g.year_month(col.sql)} = '{ym}'"
    cond = Cond(sql)
    when = f"{MONTHS[month - 1]} {year}"
    verb, own = _date_verb(tab, col)
    for n in col.names:
        cond.with_ += [f"{article(n)} {n} in {when}"]
        cond.mod += [f"whose {n} is in {when}"]
    cond.zh += [f"{col.zh}在{year}年{month}月"]
    if verb:
        cond.mod += [f"{verb} in {when}"]
        cond.pred += [f"{_were(verb)} in {when}"]
        vz = DATE_VERBS_ZH.get(verb)
        if vz:
            cond.zh += [f"{year}年{month}月{vz}"]
    elif own:
        cond.mod += [f"from {when}", f"in {when}"]
        cond.zh += [f"{year}年{month}月"]
    cond.both()
    return cond


def flag_cond(g: _Gen, col: Col, value: bool = True, alias: str = "") -> Cond:
    prefix = f"{alias}." if alias else ""
    literal = "1" if value else "0"  # DuckDB compares BOOLEAN with 0/1 too; the SQL grammar has no TRUE
    cond = Cond(f"{prefix}{col.sql} = {literal}")
    words = col.words
    adj: str | None = None
    have: str | None = None
    if words and words[0] in ("is", "was") and len(words) > 1:
        adj = " ".join(words[1:])
    elif words and words[0] == "has" and len(words) > 1:
        have = " ".join(words[1:])
    elif len(words) == 1 and (words[0].endswith("ed") or words[0] in GLOSSARY):
        adj = words[0]
    comment = (col.info.comment or "").strip()
    m = re.match(r"^1\s*(?:=|if|when|means)\s*(?:it\s+is\s+|the\s+\w+\s+is\s+)?([a-z][a-z ]{2,30})$", comment.lower())
    alt = m.group(1).strip() if m else None
    adj_zh = g.glossary.words.get(adj) if adj else None
    if value:
        if adj:
            cond.pre += [adj] if " " not in adj else []
            cond.mod += [f"that are {adj}"]
            cond.mod_sg += [f"that is {adj}"]
            cond.pred += [f"are {adj}"]
        if have:
            cond.mod += [f"that have {have}"]
            cond.mod_sg += [f"that has {have}"]
            cond.pred += [f"have {have}"]
        if alt and alt.split(" ")[0] not in ("is", "has"):
            cond.mod += [f"that are {alt}"]
            cond.pred += [f"are {alt}"]
        cond.zh += [f"{col.name}为{literal}"]
        if adj_zh:
            cond.zh += [adj_zh]
            cond.zh_pred += [adj_zh if adj_zh.startswith("已") else f"是{adj_zh}的"]
    else:
        if adj:
            cond.mod += [f"that are not {adj}"]
            cond.pred += [f"are not {adj}"]
        if have:
            cond.mod += [f"that do not have {have}"]
            cond.pred += [f"do not have {have}"]
        cond.zh += [f"{col.name}为{literal}"]
        if adj_zh:
            cond.zh += ["未" + adj_zh.removeprefix("已") if adj_zh.startswith("已") else f"非{adj_zh}"]
    if not cond.mod:
        n = col.names[0]
        cond.mod += [f"whose {n} flag is {literal}", f"with {n} set to {literal}"]
        cond.pred += [f"have {n} set to {literal}"]
    cond.mod_sg = cond.mod_sg or [m for m in cond.mod if not m.startswith("that are")]
    return cond


def null_cond(col: Col, role: str | None = None) -> Cond:
    cond = Cond(f"{col.sql} IS NULL")
    n = role or col.names[0]
    a = article(n)
    cond.mod += [f"without {a} {n}", f"with no {n}", f"whose {n} is missing"]
    cond.mod_sg += [f"without {a} {n}"]
    cond.pred += [f"have no {n}", f"do not have {a} {n}"]
    cond.zh += [f"没有{col.zh if role is None else role}", f"{col.zh}为空"]
    cond.zh_pred += [f"没有{col.zh if role is None else role}"]
    return cond


# =====================================================================================================
# Candidates: one query, how its questions read, and what its result must look like
# =====================================================================================================

Say = Callable[[str, random.Random], list[str]]


@dataclass(slots=True)
class _Cand:
    family: str
    sql: str
    say: Say
    expect: str  # count | scalar | list | groups | top
    bucket: str  # the main table: candidates of a family are interleaved across tables
    probe: tuple[str, Callable[[Rows], bool]] | None = None  # a second query that must pass (e.g. no ties)
    distinct_col: int | None = None  # this output column must not repeat (ORDER BY key without ties)
    min_rows: int = 1
    max_rows: int = LIST_MAX


class _Gen:
    """The profiled schema plus the dialect's date functions and a seeded random source per key."""

    def __init__(self, schema: _Schema, seed: int) -> None:
        self.s = schema
        self.dialect = schema.dialect
        self.glossary = schema.glossary
        self.seed = seed
        self._to_sqlite: dict[str, str] = {}

    def rng(self, *key: Any) -> random.Random:
        return random.Random(f"{self.seed}|" + "|".join(str(k) for k in key))

    def _date_fn(self, sqlite_expr: str) -> str:
        if self.dialect == "sqlite":
            return sqlite_expr
        try:
            out = sqlglot.transpile(sqlite_expr, read="sqlite", write=self.dialect)[0]
        except (SqlglotError, IndexError):
            out = sqlite_expr
        self._to_sqlite[out] = sqlite_expr
        return out

    def year(self, col_sql: str) -> str:
        return self._date_fn(f"strftime('%Y', {col_sql})")

    def month(self, col_sql: str) -> str:
        return self._date_fn(f"strftime('%m', {col_sql})")

    def year_month(self, col_sql: str) -> str:
        return self._date_fn(f"strftime('%Y-%m', {col_sql})")

    def sqlite_of(self, sql: str) -> str:
        """The query in SQLite's dialect (the date functions written back), for a non-SQLite source."""
        if self.dialect == "sqlite":
            return ""
        for target, original in sorted(self._to_sqlite.items(), key=lambda kv: -len(kv[0])):
            sql = sql.replace(target, original)
        return sql.replace(" AS sub", "")

    def derived(self) -> str:
        """An alias after ``FROM (subquery)``: MySQL and PostgreSQL want one."""
        return " AS sub" if self.dialect in ("mysql", "mariadb", "postgres", "postgresql") else ""


def _zh_punct(text: str, rng: random.Random) -> str:
    """Chinese questions with full-width punctuation, or (as people type too) ASCII ? and ,."""
    if rng.random() < 0.35:
        return text.replace("?", "?").replace(",", ",")
    return text


def _ties_free(k: int) -> Callable[[Rows], bool]:
    """A probe check: the k-th and the (k+1)-th ordered values differ (the top k is well defined)."""

    def check(rows: Rows) -> bool:
        if len(rows) < k:
            return False
        if any(r[0] is None for r in rows[:k]):
            return False
        return len(rows) == k or rows[k - 1][0] != rows[k][0]

    return check


def _all_distinct(rows: Rows) -> bool:
    keys = [r[0] for r in rows]
    return None not in keys and len(set(keys)) == len(keys)


# =====================================================================================================
# Template families
# =====================================================================================================

AGG_EN = {"AVG": ["average", "mean"], "MAX": ["highest", "maximum"], "MIN": ["lowest", "minimum"], "SUM": ["total"]}
AGG_ZH = {"AVG": "平均", "MAX": "最高", "MIN": "最低", "SUM": "总"}


def _then(sentence: str, clause: str) -> str:
    """``sentence`` with ``clause`` before its final punctuation."""
    if sentence and sentence[-1] in "?.。?":
        return sentence[:-1] + clause + sentence[-1]
    return sentence + clause


def _measures(tab: Tab) -> list[Col]:
    out = []
    for c in tab.cols:
        if c.kind != "number":
            continue
        if c.last in ("number", "no", "order", "position", "index", "sequence", "seq", "code", "version", "rank"):
            continue
        if c.has({"year", "zip", "postal", "phone", "latitude", "longitude", "lat", "lon", "lng"}):
            continue
        out.append(c)
    return out


def _summable(col: Col) -> bool:
    return not col.has(_NO_SUM_WORDS) and not col.ratio


def _groupable(tab: Tab) -> list[Col]:
    return [c for c in tab.categories if 2 <= c.distinct <= MAX_GROUPS]


def _named(tab: Tab) -> bool:
    return bool(tab.label) and not tab.label_is_key


def _values(g: _Gen, col: Col, key: str, k: int) -> list[Any]:
    """Up to ``k`` of the column's real values, seen in the sample when possible."""
    pool = [v for v in col.values if _good_value(v)]
    seen = [v for v in pool if col.counts.get(v)]
    pool = seen or pool
    rng = g.rng("values", key, col.name)
    return rng.sample(pool, min(k, len(pool)))


def _threshold(col: Col, q: float) -> float | None:
    """A round number near the ``q`` quantile of the column's sampled values, strictly inside its range."""
    vals = col.values
    if len(vals) < 3:
        return None
    raw = vals[int(q * (len(vals) - 1))]
    integer = all(float(v).is_integer() for v in vals)
    lo, hi = vals[0], vals[-1]
    for t in (nice_number(raw, integer), round(raw, 2), raw):
        if lo < t < hi:
            return int(t) if integer else t
    return None


def _share(col: Col, op: str, x: float, y: float | None = None) -> float:
    vals = col.values
    if not vals:
        return 1.0
    if op == ">":
        n = sum(v > x for v in vals)
    elif op == "<":
        n = sum(v < x for v in vals)
    else:
        n = sum(x <= v <= (y or x) for v in vals)
    return n / len(vals)


def _years(col: Col) -> list[int]:
    """Years the sampled dates fall in, the most frequent first."""
    counts = Counter(int(v[:4]) for v in col.values if v[:4].isdigit())
    return [y for y, _ in counts.most_common()]


def _verb_zh(verb: str | None) -> str | None:
    return DATE_VERBS_ZH.get(verb) if verb else None


# --- counts and lists on one table ---------------------------------------------------------------------


def _count_where(family: str, t: Tab, cond: Cond) -> _Cand:
    sql = f"SELECT COUNT(*) FROM {t.sql} WHERE {cond.sql}"

    def say(lang: str, r: random.Random) -> list[str]:
        if lang == "en":
            withs = [m for m in cond.mod if m.startswith("with ")] or cond.mod
            out = [
                f"How many {t.pl} {_pick(r, cond.pred)}?",
                f"What is the number of {t.pl} {_pick(r, cond.mod)}?",
                f"Count the {t.pl} {_pick(r, cond.mod)}.",
                f"Find the number of {t.pl} {_pick(r, cond.mod)}.",
                f"How many {t.pl} are there {_pick(r, withs)}?",
            ]
            if cond.pre:
                out += [f"How many {_pick(r, cond.pre)} {t.pl} are there?"]
            return out
        out = [
            f"{_pick(r, cond.zh)}的{t.zh}有多少个?",
            f"统计{_pick(r, cond.zh)}的{t.zh}数量。",
            f"{_pick(r, cond.zh)}的{t.zh}一共有多少?",
            f"{t.zh}中{_pick(r, cond.zh)}的有多少个?",
        ]
        if cond.zh_pred:
            out += [f"有多少{t.zh}{_pick(r, cond.zh_pred)}?"]
        return out

    return _Cand(family, sql, say, "count", t.name)


def _list_where(family: str, t: Tab, cond: Cond, extra: Col | None = None) -> _Cand:
    sql = f"SELECT {_label_sql(t)}{', ' + extra.sql if extra else ''} FROM {t.sql} WHERE {cond.sql}"

    def say(lang: str, r: random.Random) -> list[str]:
        if lang == "en":
            lab = _label_en(t, True, r) + (f" and {_cplural(extra, r)}" if extra else "")
            out = [
                f"List the {lab} of {t.pl} {_pick(r, cond.mod)}.",
                f"What are the {lab} of {t.pl} {_pick(r, cond.mod)}?",
                f"Show the {lab} of all {t.pl} {_pick(r, cond.mod)}.",
                f"Which {t.pl} {_pick(r, cond.pred)}? Give their {lab}.",
                f"Give me the {lab} of the {t.pl} {_pick(r, cond.mod)}.",
                f"Find the {lab} of {t.pl} {_pick(r, cond.mod)}.",
            ]
            if cond.pre:
                out += [f"List the {lab} of all {_pick(r, cond.pre)} {t.pl}."]
            return out
        lab = _label_zh(t, r) + (f"和{extra.zh}" if extra else "")
        out = [
            f"列出{_pick(r, cond.zh)}的{t.zh}的{lab}。",
            f"{_pick(r, cond.zh)}的{t.zh}有哪些?给出{lab}。",
            f"显示所有{_pick(r, cond.zh)}的{t.zh}的{lab}。",
            f"查询{_pick(r, cond.zh)}的{t.zh}的{lab}。",
        ]
        if cond.zh_pred:
            out += [f"哪些{t.zh}{_pick(r, cond.zh_pred)}?请给出{_they_zh(t)}的{lab}。"]
        return out

    return _Cand(family, sql, say, "list", t.name)


def _fam_count_all(g: _Gen) -> Iterator[_Cand]:
    for t in g.s.tables:

        def say(lang: str, r: random.Random, t: Tab = t) -> list[str]:
            if lang == "en":
                return [
                    f"How many {t.pl} are there?",
                    f"What is the total number of {t.pl}?",
                    f"Count the {t.pl}.",
                    f"How many {t.pl} are in the database?",
                    f"What is the number of {t.pl}?",
                    f"Give me the count of {t.pl}.",
                    f"How many {t.pl} do we have?",
                ]
            return [
                f"有多少个{t.zh}?",
                f"{t.zh}一共有多少个?",
                f"{t.zh}的总数是多少?",
                f"统计{t.zh}的数量。",
                f"共有多少{t.zh}?",
                f"{t.zh}的数量是多少?",
            ]

        yield _Cand("count_all", f"SELECT COUNT(*) FROM {t.sql}", say, "count", t.name)


def _fam_count_filter(g: _Gen) -> Iterator[_Cand]:
    for t in g.s.tables:
        for c in t.categories:
            for v in _values(g, c, "count_filter", 3):
                yield _count_where(
                    "count_filter", t, eq_cond(g, t, c, v, quoted=g.rng("q", t.name, c.name, v).random() < 0.1)
                )


def _fam_list_filter(g: _Gen) -> Iterator[_Cand]:
    for t in g.s.tables:
        if not t.label:
            continue
        for c in t.categories:
            for v in _values(g, c, "list_filter", 3):
                quoted = g.rng("q", "l", t.name, c.name, v).random() < 0.1
                yield _list_where("list_filter", t, eq_cond(g, t, c, v, quoted=quoted))


def _fam_list_all(g: _Gen) -> Iterator[_Cand]:
    for t in g.s.tables:
        if not _named(t) or t.rows > 100:
            continue

        def say(lang: str, r: random.Random, t: Tab = t) -> list[str]:
            if lang == "en":
                lab = _label_en(t, True, r)
                return [
                    f"List the {lab} of all {t.pl}.",
                    f"What are the {lab} of all {t.pl}?",
                    f"Show the {_label_en(t, False, r)} of each {t.sg}.",
                    f"Give me the {lab} of the {t.pl}.",
                    f"What are all the {t.pl}? Give their {lab}.",
                ]
            lab = _label_zh(t, r)
            return [
                f"列出所有{t.zh}的{lab}。",
                f"所有{t.zh}的{lab}是什么?",
                f"显示每个{t.zh}的{lab}。",
                f"给出全部{t.zh}的{lab}。",
            ]

        yield _Cand("list_all", f"SELECT {_label_sql(t)} FROM {t.sql}", say, "list", t.name)
        for c in [*t.categories[:2], *_measures(t)[:1]]:

            def say2(lang: str, r: random.Random, t: Tab = t, c: Col = c) -> list[str]:
                if lang == "en":
                    lab, cn = _label_en(t, True, r), _cplural(c, r)
                    return [
                        f"List the {lab} and {cn} of all {t.pl}.",
                        f"What are the {lab} and {cn} of the {t.pl}?",
                        f"Show each {t.sg}'s {_label_en(t, False, r)} and {_cname(c, r)}.",
                    ]
                lab = _label_zh(t, r)
                return [
                    f"列出所有{t.zh}的{lab}和{c.zh}。",
                    f"每个{t.zh}的{lab}和{c.zh}是什么?",
                    f"显示全部{t.zh}的{lab}及其{c.zh}。",
                ]

            yield _Cand("list_all", f"SELECT {_label_sql(t)}, {c.sql} FROM {t.sql}", say2, "list", t.name)


def _fam_distinct(g: _Gen) -> Iterator[_Cand]:
    for t in g.s.tables:
        for c in t.categories:

            def say(lang: str, r: random.Random, t: Tab = t, c: Col = c) -> list[str]:
                if lang == "en":
                    cs = _cplural(c, r)
                    return [
                        f"What are the different {cs} of {t.pl}?",
                        f"List the distinct {cs} of {t.pl}.",
                        f"Which {cs} do the {t.pl} have?",
                        f"Show all distinct {_cname(c, r)} values of {t.pl}.",
                        f"What {cs} appear among the {t.pl}?",
                    ]
                return [
                    f"{t.zh}有哪些不同的{c.zh}?",
                    f"列出{t.zh}所有不同的{c.zh}。",
                    f"{t.zh}的{c.zh}有哪几种?",
                    f"{t.zh}中出现过哪些{c.zh}?",
                ]

            def say_n(lang: str, r: random.Random, t: Tab = t, c: Col = c) -> list[str]:
                if lang == "en":
                    cs = _cplural(c, r)
                    return [
                        f"How many different {cs} do the {t.pl} have?",
                        f"How many distinct {cs} are there among {t.pl}?",
                        f"Count the distinct {cs} of {t.pl}.",
                        f"What is the number of different {cs} across all {t.pl}?",
                    ]
                return [f"{t.zh}有多少种不同的{c.zh}?", f"{t.zh}的{c.zh}共有多少种?", f"统计{t.zh}中不同{c.zh}的数量。"]

            yield _Cand("distinct", f"SELECT DISTINCT {c.sql} FROM {t.sql}", say, "list", t.name, min_rows=2)
            yield _Cand("distinct", f"SELECT COUNT(DISTINCT {c.sql}) FROM {t.sql}", say_n, "count", t.name)


def _fam_numeric_filter(g: _Gen) -> Iterator[_Cand]:
    for t in g.s.tables:
        for c in _measures(t):
            rng = g.rng("numeric_filter", t.name, c.name)
            for op in rng.sample([">", "<", "between"], 2):
                if op == "between":
                    x, y = _threshold(c, 0.3), _threshold(c, 0.7)
                    if x is None or y is None or x >= y:
                        continue
                else:
                    x, y = _threshold(c, rng.choice([0.25, 0.5, 0.75] if op == ">" else [0.25, 0.5])), None
                    if x is None:
                        continue
                cond = number_cond(g, c, op, x, y)
                estimate = _share(c, op, x, y) * t.rows
                if t.label and estimate <= LIST_MAX * 0.75 and (not t.label_is_key or rng.random() < 0.3):
                    yield _list_where("numeric_filter", t, cond, extra=c if rng.random() < 0.4 else None)
                else:
                    yield _count_where("numeric_filter", t, cond)


# --- aggregates ---------------------------------------------------------------------------------------


def _agg_cand(family: str, g: _Gen, t: Tab, c: Col, agg: str, cond: Cond | None = None) -> _Cand:
    where = f" WHERE {cond.sql}" if cond else ""
    sql = f"SELECT {agg}({c.sql}) FROM {t.sql}{where}"
    price = c.has(_PRICE_WORDS)

    def say(lang: str, r: random.Random) -> list[str]:
        if lang == "en":
            n = _cname(c, r)
            word = _pick(r, AGG_EN[agg])
            if cond:
                np_ = _pick(r, [f"{t.pl} {m}" for m in cond.mod] + [f"{p} {t.pl}" for p in cond.pre])
                out = [
                    f"What is the {word} {n} of {np_}?",
                    f"Find the {word} {n} of {np_}.",
                    f"Calculate the {word} {n} of {np_}.",
                    f"What is the {word} {n} among {np_}?",
                ]
                if agg == "SUM":
                    out += [f"What is the sum of the {n} of {np_}?", f"Add up the {n} of {np_}."]
                return out
            if agg == "AVG":
                return [
                    f"What is the average {n} of {t.pl}?",
                    f"What is the mean {n} across all {t.pl}?",
                    f"Find the average {n} of all {t.pl}.",
                    f"On average, what is the {n} of {article(t.sg)} {t.sg}?",
                    f"Calculate the average {n} of {t.pl}.",
                ]
            if agg == "SUM":
                return [
                    f"What is the total {n} of all {t.pl}?",
                    f"What is the sum of the {n} over all {t.pl}?",
                    f"Add up the {n} of all {t.pl}.",
                    f"What is the combined {n} of all {t.pl}?",
                    f"Calculate the total {n} of {t.pl}.",
                ]
            big = agg == "MAX"
            out = [
                f"What is the {word} {n} of any {t.sg}?",
                f"What is the {word} {n} among {t.pl}?",
                f"Find the {'largest' if big else 'smallest'} {n} of all {t.pl}.",
                f"What is the {'highest' if big else 'lowest'} {n} among all {t.pl}?",
            ]
            if price:
                out += [f"How much does the {'most expensive' if big else 'cheapest'} {t.sg} cost?"]
            return out
        n = c.zh
        noun = f"{_pick(r, cond.zh)}的{t.zh}" if cond else t.zh
        if agg == "AVG":
            out = [f"{noun}的平均{n}是多少?", f"计算{noun}的平均{n}。", f"{noun}的{n}平均是多少?"]
            return out + ([f"所有{t.zh}的平均{n}是多少?"] if not cond else [])
        if agg == "SUM":
            return [
                f"{noun}的{n}总和是多少?",
                f"{noun}的总{n}是多少?",
                f"计算{noun}的{n}合计。",
                f"{noun}的{n}加起来是多少?",
            ]
        if agg == "MAX":
            out = [f"{noun}的最高{n}是多少?", f"{noun}中最大的{n}是多少?", f"{noun}里{n}的最大值是多少?"]
            return out + ([f"最贵的{t.zh}的{n}是多少?"] if price and not cond else [])
        out = [f"{noun}的最低{n}是多少?", f"{noun}中最小的{n}是多少?", f"{noun}里{n}的最小值是多少?"]
        return out + ([f"最便宜的{t.zh}的{n}是多少?"] if price and not cond else [])

    return _Cand(family, sql, say, "scalar", t.name)


def _fam_aggregate(g: _Gen) -> Iterator[_Cand]:
    for t in g.s.tables:
        for c in _measures(t):
            rng = g.rng("aggregate", t.name, c.name)
            aggs = ["AVG", "MAX", "MIN"] + (["SUM"] if _summable(c) else [])
            for agg in rng.sample(aggs, 2):
                yield _agg_cand("aggregate", g, t, c, agg)
            if rng.random() < 0.4:

                def say(lang: str, r: random.Random, t: Tab = t, c: Col = c) -> list[str]:
                    if lang == "en":
                        ns = _cplural(c, r)
                        return [
                            f"What are the lowest and highest {ns} of {t.pl}?",
                            f"What are the minimum and maximum {ns} among {t.pl}?",
                            f"Give the smallest and the largest {_cname(c, r)} of all {t.pl}.",
                        ]
                    return [
                        f"{t.zh}的{c.zh}最小值和最大值分别是多少?",
                        f"{t.zh}的最低{c.zh}和最高{c.zh}各是多少?",
                        f"列出{t.zh}{c.zh}的最小值与最大值。",
                    ]

                yield _Cand("aggregate", f"SELECT MIN({c.sql}), MAX({c.sql}) FROM {t.sql}", say, "scalar", t.name)


def _fam_aggregate_filter(g: _Gen) -> Iterator[_Cand]:
    for t in g.s.tables:
        measures = _measures(t)
        if not measures:
            continue
        rng = g.rng("aggregate_filter", t.name)
        conds: list[Cond] = []
        for c in t.categories:
            for v in _values(g, c, "aggregate_filter", 2):
                conds.append(eq_cond(g, t, c, v))
        for c in t.of_kind("flag"):
            conds.append(flag_cond(g, c))
        for c in _date_cols(t):
            for y in _years(c)[:2]:
                conds.append(
                    year_cond(
                        g, t, c, y, rng.choice(["range", "like", "strftime"] if c.text_dates else ["range", "strftime"])
                    )
                )
        for cond in conds:
            c = rng.choice(measures)
            aggs = ["AVG", "MAX", "MIN"] + (["SUM"] if _summable(c) else [])
            yield _agg_cand("aggregate_filter", g, t, c, rng.choice(aggs), cond)


# --- groups ---------------------------------------------------------------------------------------------


def _fam_group_count(g: _Gen) -> Iterator[_Cand]:
    for t in g.s.tables:
        for c, ordered in [(c, ordered) for c in _groupable(t) for ordered in (False, True)]:
            sql = f"SELECT {c.sql}, COUNT(*) FROM {t.sql} GROUP BY {c.sql}" + (
                " ORDER BY COUNT(*) DESC" if ordered else ""
            )

            def say(lang: str, r: random.Random, t: Tab = t, c: Col = c, ordered: bool = ordered) -> list[str]:
                if lang == "en":
                    n = _cname(c, r)
                    out = [
                        f"How many {t.pl} are there for each {n}?",
                        f"How many {t.pl} are in each {n}?",
                        f"Count the {t.pl} per {n}.",
                        f"For each {n}, how many {t.pl} are there?",
                        f"Show the number of {t.pl} for every {n}.",
                        f"What is the number of {t.pl} in each {n}?",
                    ]
                    if ordered:
                        return [
                            _then(
                                s,
                                _pick(
                                    r,
                                    [
                                        ", sorted from most to fewest",
                                        ", from the most to the fewest",
                                        ", in descending order of the count",
                                    ],
                                ),
                            )
                            for s in out
                        ]
                    return out
                out = [
                    f"每个{c.zh}有多少{t.zh}?",
                    f"按{c.zh}统计{t.zh}的数量。",
                    f"各{c.zh}的{t.zh}数量是多少?",
                    f"每{'种' if c.last in _GROUP_WORDS else '个'}{c.zh}分别有多少个{t.zh}?",
                    f"统计每个{c.zh}下{t.zh}的个数。",
                ]
                if ordered:
                    return [_then(s, _pick(r, [",按数量从多到少排列", ",按数量降序排列"])) for s in out]
                return out

            yield _Cand("group_count", sql, say, "groups", t.name, distinct_col=1 if ordered else None, min_rows=2)


def _fam_having(g: _Gen) -> Iterator[_Cand]:
    for t in g.s.tables:
        for c in _groupable(t):
            counts = sorted(c.counts.values())
            if len(counts) < 3:
                continue
            scale = t.rows / max(t.sampled, 1)
            rng = g.rng("having", t.name, c.name)
            op = rng.choice([">", ">", "<"])
            n = max(1, int(nice_number(counts[len(counts) // 2] * scale, True)))
            show = rng.random() < 0.35
            sql = f"SELECT {c.sql}{', COUNT(*)' if show else ''} FROM {t.sql} GROUP BY {c.sql} HAVING COUNT(*) {op} {n}"

            def say(
                lang: str, r: random.Random, t: Tab = t, c: Col = c, op: str = op, n: int = n, show: bool = show
            ) -> list[str]:
                if lang == "en":
                    cs = _cplural(c, r)
                    more = _pick(r, ["more than", "over"]) if op == ">" else "fewer than"
                    out = [
                        f"Which {cs} have {more} {_n_of(n, t.sg, t.pl)}?",
                        f"List the {cs} with {more} {_n_of(n, t.sg, t.pl)}.",
                        f"Find the {cs} that have {more} {_n_of(n, t.sg, t.pl)}.",
                    ]
                    if show:
                        return [_then(s, f", with the number of {t.pl} in each") for s in out]
                    return out
                word = "超过" if op == ">" else "少于"
                out = [
                    f"哪些{c.zh}的{t.zh}{word}{n}个?",
                    f"{t.zh}数量{'多于' if op == '>' else '少于'}{n}的{c.zh}有哪些?",
                    f"列出{t.zh}{word}{n}个的{c.zh}。",
                ]
                if show:
                    return [_then(s, ",并给出各自的数量") for s in out]
                return out

            yield _Cand("having", sql, say, "list", t.name)


def _group_agg_say(t: Tab, gcol: Col, c: Col, agg: str, mode: str, k: int = 0) -> Say:
    def say(lang: str, r: random.Random) -> list[str]:
        if lang == "en":
            gn, n, word = _cname(gcol, r), _cname(c, r), _pick(r, AGG_EN[agg])
            if mode == "top":
                gs = _cplural(gcol, r)
                kk = _k_en(k, r)
                return [
                    f"Which {kk} {gs} have the highest {word} {n}? Show each with its {word}.",
                    f"List the top {kk} {gs} by {word} {n} of {t.pl}, with the {word} {n}.",
                    f"What are the {kk} {gs} with the highest {word} {n}, and what is that {word}?",
                ]
            if mode == "best":
                return [
                    f"Which {gn} has the highest {word} {n}?",
                    f"What is the {gn} whose {t.pl} have the highest {word} {n}?",
                    f"Find the {gn} with the highest {word} {n} of {t.pl}.",
                ]
            out = [
                f"What is the {word} {n} for each {gn}?",
                f"For each {gn}, what is the {word} {n} of {t.pl}?",
                f"Show the {word} {n} of {t.pl} per {gn}.",
                f"What is the {word} {n} of {t.pl} in each {gn}?",
                f"List each {gn} with the {word} {n} of its {t.pl}.",
            ]
            if mode == "ordered":
                return [_then(s, f", sorted by the {word} from highest to lowest") for s in out]
            return out
        a, n = AGG_ZH[agg], c.zh
        if mode == "top":
            kk = _k_zh(k, r)
            return [
                f"{a}{n}最高的{kk}个{gcol.zh}是哪些?并给出{a}{n}。",
                f"按{a}{n}从高到低排列,列出前{kk}个{gcol.zh}及其{a}{n}。",
            ]
        if mode == "best":
            return [f"{a}{n}最高的{gcol.zh}是哪个?", f"哪个{gcol.zh}的{t.zh}{a}{n}最高?"]
        out = [
            f"每个{gcol.zh}的{a}{n}是多少?",
            f"按{gcol.zh}统计{t.zh}的{a}{n}。",
            f"各{gcol.zh}的{t.zh}{a}{n}分别是多少?",
            f"列出每个{gcol.zh}及其{t.zh}的{a}{n}。",
        ]
        if mode == "ordered":
            return [_then(s, f",按{a}{n}从高到低排列") for s in out]
        return out

    return say


def _fam_group_agg(g: _Gen) -> Iterator[_Cand]:
    for t in g.s.tables:
        for gcol in _groupable(t):
            for c in _measures(t):
                rng = g.rng("group_agg", t.name, gcol.name, c.name)
                aggs = ["AVG", "MAX", "MIN"] + (["SUM"] if _summable(c) else [])
                for agg, mode in zip(rng.sample(aggs, 2), ["plain", rng.choice(["plain", "ordered"])], strict=True):
                    yield _group_agg_cand(t, gcol, c, agg, mode)


def _group_agg_cand(t: Tab, gcol: Col, c: Col, agg: str, mode: str) -> _Cand:
    expr = f"{agg}({c.sql})"
    sql = f"SELECT {gcol.sql}, {expr} FROM {t.sql} GROUP BY {gcol.sql}"
    if mode == "ordered":
        sql += f" ORDER BY {expr} DESC"
    return _Cand(
        "group_agg",
        sql,
        _group_agg_say(t, gcol, c, agg, mode),
        "groups",
        t.name,
        distinct_col=1 if mode == "ordered" else None,
        min_rows=2,
    )


def _fam_group_top(g: _Gen) -> Iterator[_Cand]:
    for t in g.s.tables:
        for gcol in _groupable(t):
            rng = g.rng("group_top", t.name, gcol.name)
            most = rng.random() < 0.7
            d = "DESC" if most else "ASC"
            sql = f"SELECT {gcol.sql} FROM {t.sql} GROUP BY {gcol.sql} ORDER BY COUNT(*) {d} LIMIT 1"
            probe = f"SELECT COUNT(*) FROM {t.sql} GROUP BY {gcol.sql} ORDER BY COUNT(*) {d} LIMIT 2"

            def say(lang: str, r: random.Random, t: Tab = t, gcol: Col = gcol, most: bool = most) -> list[str]:
                if lang == "en":
                    n = _cname(gcol, r)
                    if most:
                        return [
                            f"Which {n} has the most {t.pl}?",
                            f"What is the {n} with the largest number of {t.pl}?",
                            f"Which {n} has the highest number of {t.pl}?",
                            f"Find the {n} that has the most {t.pl}.",
                        ]
                    return [
                        f"Which {n} has the fewest {t.pl}?",
                        f"What is the {n} with the smallest number of {t.pl}?",
                        f"Find the {n} that has the fewest {t.pl}.",
                    ]
                w = "最多" if most else "最少"
                return [
                    f"哪个{gcol.zh}的{t.zh}{w}?",
                    f"{t.zh}数量{w}的{gcol.zh}是哪个?",
                    f"拥有{w}{t.zh}的{gcol.zh}是什么?",
                ]

            yield _Cand("group_top", sql, say, "top", t.name, probe=(probe, _ties_free(1)))
            groups = [c for c in _groupable(t) if c.distinct >= 4]
            for c in _measures(t)[:2]:
                if gcol not in groups:
                    break
                agg = rng.choice(["AVG", "SUM"] if _summable(c) else ["AVG"])
                expr = f"{agg}({c.sql})"
                if rng.random() < 0.5:
                    k = 3 if gcol.distinct > 4 else 2
                    sql = f"SELECT {gcol.sql}, {expr} FROM {t.sql} GROUP BY {gcol.sql} ORDER BY {expr} DESC LIMIT {k}"
                    probe = f"SELECT {expr} FROM {t.sql} GROUP BY {gcol.sql} ORDER BY {expr} DESC LIMIT {k + 1}"
                    yield _Cand(
                        "group_top",
                        sql,
                        _group_agg_say(t, gcol, c, agg, "top", k),
                        "top",
                        t.name,
                        probe=(probe, _ties_free(k)),
                    )
                else:
                    sql = f"SELECT {gcol.sql} FROM {t.sql} GROUP BY {gcol.sql} ORDER BY {expr} DESC LIMIT 1"
                    probe = f"SELECT {expr} FROM {t.sql} GROUP BY {gcol.sql} ORDER BY {expr} DESC LIMIT 2"
                    yield _Cand(
                        "group_top",
                        sql,
                        _group_agg_say(t, gcol, c, agg, "best"),
                        "top",
                        t.name,
                        probe=(probe, _ties_free(1)),
                    )


def _fam_top_k(g: _Gen) -> Iterator[_Cand]:
    for t in g.s.tables:
        if not _named(t):
            continue
        for c in [*_measures(t), *_date_cols(t)]:
            rng = g.rng("top_k", t.name, c.name)
            for desc in (True, False):
                if not desc and c.nulls:
                    continue  # NULLs sort first ascending in some engines
                k = rng.choice([1, 1, 3, 5]) if t.rows > 6 else 1
                d = "DESC" if desc else "ASC"
                with_value = k > 1 and rng.random() < 0.6
                cols = _label_sql(t) + (f", {c.sql}" if with_value else "")
                sql = f"SELECT {cols} FROM {t.sql} ORDER BY {c.sql} {d} LIMIT {k}"
                probe = f"SELECT {c.sql} FROM {t.sql} ORDER BY {c.sql} {d} LIMIT {k + 1}"
                say = _top_say(t, c, desc, k, with_value)
                yield _Cand("top_k", sql, say, "top", t.name, probe=(probe, _ties_free(k)))


def _top_say(t: Tab, c: Col, desc: bool, k: int, with_value: bool) -> Say:
    date = c.kind == "date"
    verb, _ = _date_verb(t, c) if date else (None, False)
    price, pay = c.has(_PRICE_WORDS), c.has(_PAY_WORDS)

    def say(lang: str, r: random.Random) -> list[str]:
        if lang == "en":
            n, lab1, lab = _cname(c, r), _label_en(t, False, r), _label_en(t, True, r)
            if date:
                hi = _pick(r, ["latest", "most recent"]) if desc else "earliest"
            else:
                hi = _pick(r, ["highest", "largest"] if desc else ["lowest", "smallest"])
            if k == 1:
                out = [
                    f"What is the {lab1} of the {t.sg} with the {hi} {n}?",
                    f"Which {t.sg} has the {hi} {n}? Give {_its(t)} {lab1}.",
                    f"Find the {lab1} of the {t.sg} whose {n} is the {hi}.",
                ]
                if price:
                    w = "most expensive" if desc else "cheapest"
                    out += [
                        f"What is the {lab1} of the {w} {t.sg}?",
                        f"Which {t.sg} is the {w}? Give {_its(t)} {lab1}.",
                    ]
                if pay:
                    out += [f"Which {t.sg} is paid the {'most' if desc else 'least'}? Give the {lab1}."]
                if verb:
                    when = "most recently" if desc else "first"
                    out += [f"Which {t.sg} {_were(verb, False)} {when}? Give {_its(t)} {lab1}."]
                return out
            kk = _k_en(k, r)
            if with_value:
                ns = _cplural(c, r)
                out = [
                    f"List the {kk} {t.pl} with the {hi} {n}, with their {lab} and {ns}.",
                    f"Which {kk} {t.pl} have the {hi} {n}? Show their {lab} and {ns}.",
                    f"Show the {lab} and {ns} of the {kk} {t.pl} with the {hi} {n}.",
                ]
                if price:
                    w = "most expensive" if desc else "cheapest"
                    out += [f"List the {kk} {w} {t.pl} with their {lab} and {ns}."]
                return out
            out = [
                f"What are the {lab} of the {kk} {t.pl} with the {hi} {n}?",
                f"List the {lab} of the {kk} {t.pl} with the {hi} {n}.",
                f"Give me the {lab} of the top {kk} {t.pl} by {'highest' if desc else 'lowest'} {n}.",
            ]
            if date:
                out = out[:2]
            if price:
                out += [f"What are the {lab} of the {kk} {'most expensive' if desc else 'cheapest'} {t.pl}?"]
            if verb:
                out += [f"List the {lab} of the {kk} {t.pl} {verb} {'most recently' if desc else 'first'}."]
            return out
        n, lab = c.zh, _label_zh(t, r)
        if date:
            hi = _pick(r, ["最晚", "最近"]) if desc else "最早"
        else:
            hi = "最高" if desc else "最低"
        vz = _verb_zh(verb)
        if k == 1:
            out = [f"{n}{hi}的{t.zh}的{lab}是什么?", f"哪个{t.zh}的{n}{hi}?给出{lab}。"]
            if price:
                out += [f"{'最贵' if desc else '最便宜'}的{t.zh}的{lab}是什么?"]
            if vz:
                out += [f"{'最近' if desc else '最早'}{vz}的{t.zh}是{'谁' if _person(t) else '哪个'}?给出{lab}。"]
            return out
        kk = _k_zh(k, r)
        order = "从晚到早" if date and desc else "从早到晚" if date else "从高到低" if desc else "从低到高"
        if with_value:
            out = [f"{n}{hi}的{kk}个{t.zh}是哪些?给出{lab}和{n}。", f"按{n}{order}列出前{kk}个{t.zh}的{lab}和{n}。"]
            if price:
                out += [f"列出{'最贵' if desc else '最便宜'}的{kk}个{t.zh}及其{lab}和{n}。"]
            return out
        out = [f"{n}{hi}的{kk}个{t.zh}的{lab}是什么?", f"按{n}{order},前{kk}个{t.zh}的{lab}是什么?"]
        if price:
            out += [f"{'最贵' if desc else '最便宜'}的{kk}个{t.zh}是哪些?给出{lab}。"]
        return out

    return say


# --- joins ----------------------------------------------------------------------------------------------


def _join(link: Link, parent_first: bool = False) -> tuple[str, str, str]:
    """``FROM`` text joining the link's child and parent under their aliases; the two aliases."""
    ca, pa = link.child.alias, link.parent.alias
    on = f"{ca}.{link.fk.sql} = {pa}.{link.pk.sql}"
    if parent_first:
        return f"{link.parent.sql} AS {pa} JOIN {link.child.sql} AS {ca} ON {on}", ca, pa
    return f"{link.child.sql} AS {ca} JOIN {link.parent.sql} AS {pa} ON {on}", ca, pa


def _group_key(g: _Gen, tab: Tab, alias: str) -> tuple[str, str]:
    """What to SELECT and GROUP BY for "each <parent>": its label, or its key plus label when labels repeat."""
    label = _label_sql(tab, alias)
    if len(tab.label) == 1 and tab.label[0].unique:
        return label, label
    assert tab.pk is not None
    key = f"{alias}.{tab.pk.sql}"
    return label, key if g.dialect == "sqlite" else f"{key}, {label}"


def _plain_links(g: _Gen) -> list[Link]:
    return [lk for lk in g.s.links if not lk.self_ref]


def _role_label_en(link: Link, r: random.Random, plural_form: bool = False) -> str:
    """ "the region name" / "the employee's first and last names"."""
    lab = _label_en(link.parent, plural_form, r)
    if len(link.parent.label) == 2 or link.parent.label_is_key:
        return f"the {link.role}'s {lab}"
    return f"the {link.role} {lab}"


def _fam_join_filter(g: _Gen) -> Iterator[_Cand]:
    for link in _plain_links(g):
        child, parent = link.child, link.parent
        pcols = list(parent.categories)
        if _named(parent) and len(parent.label) == 1:
            pcols.append(parent.label[0])
        for pc in pcols:
            for v in _values(g, pc, f"join_filter|{link.child.name}|{link.fk.name}", 2):
                rng = g.rng("join_filter", child.name, link.fk.name, pc.name, v)
                src, ca, pa = _join(link, parent_first=rng.random() < 0.25)
                cond = join_cond(g, link, pc, v, pa, quoted=rng.random() < 0.15)
                roll = rng.random()
                measures = _measures(child)
                if _named(child) and roll < 0.55:
                    sql = f"SELECT {_label_sql(child, ca)} FROM {src} WHERE {cond.sql}"
                    yield _Cand("join_filter", sql, _join_list_say(child, cond), "list", child.name)
                elif measures and roll < 0.8:
                    c = rng.choice(measures)
                    agg = rng.choice(["AVG", "SUM"] if _summable(c) else ["AVG", "MAX"])
                    sql = f"SELECT {agg}({ca}.{c.sql}) FROM {src} WHERE {cond.sql}"
                    yield _Cand("join_filter", sql, _join_agg_say(child, c, agg, cond), "scalar", child.name)
                else:
                    sql = f"SELECT COUNT(*) FROM {src} WHERE {cond.sql}"
                    yield _Cand("join_filter", sql, _join_count_say(child, cond), "count", child.name)


def _join_list_say(child: Tab, cond: Cond) -> Say:
    def say(lang: str, r: random.Random) -> list[str]:
        if lang == "en":
            lab = _label_en(child, True, r)
            return [
                f"List the {lab} of {child.pl} {_pick(r, cond.mod)}.",
                f"Which {child.pl} {_pick(r, cond.pred)}? Give their {lab}.",
                f"What are the {lab} of {child.pl} {_pick(r, cond.mod)}?",
                f"Show the {lab} of all {child.pl} {_pick(r, cond.mod)}.",
            ]
        lab = _label_zh(child, r)
        return [
            f"列出{_pick(r, cond.zh)}的{child.zh}的{lab}。",
            f"{_pick(r, cond.zh)}的{child.zh}有哪些?给出{lab}。",
            f"哪些{child.zh}{_pick(r, cond.zh_pred)}?请给出{lab}。",
        ]

    return say


def _join_count_say(child: Tab, cond: Cond) -> Say:
    def say(lang: str, r: random.Random) -> list[str]:
        if lang == "en":
            return [
                f"How many {child.pl} {_pick(r, cond.pred)}?",
                f"What is the number of {child.pl} {_pick(r, cond.mod)}?",
                f"Count the {child.pl} {_pick(r, cond.mod)}.",
            ]
        return [
            f"{_pick(r, cond.zh)}的{child.zh}有多少个?",
            f"统计{_pick(r, cond.zh)}的{child.zh}数量。",
            f"有多少{child.zh}{_pick(r, cond.zh_pred)}?",
        ]

    return say


def _join_agg_say(child: Tab, c: Col, agg: str, cond: Cond) -> Say:
    def say(lang: str, r: random.Random) -> list[str]:
        if lang == "en":
            n, w = _cname(c, r), _pick(r, AGG_EN[agg])
            return [
                f"What is the {w} {n} of {child.pl} {_pick(r, cond.mod)}?",
                f"Find the {w} {n} of {child.pl} {_pick(r, cond.mod)}.",
                f"Calculate the {w} {n} of all {child.pl} {_pick(r, cond.mod)}.",
            ]
        a = AGG_ZH[agg]
        return [
            f"{_pick(r, cond.zh)}的{child.zh}的{a}{c.zh}是多少?",
            f"计算{_pick(r, cond.zh)}的{child.zh}的{a}{c.zh}。",
        ]

    return say


def _fam_join_group(g: _Gen) -> Iterator[_Cand]:
    for link in _plain_links(g):
        child, parent = link.child, link.parent
        keys: list[Col | None] = [None] if _named(parent) else []
        keys += _groupable(parent)[:2]
        for key in keys:
            rng = g.rng("join_group", child.name, link.fk.name, key.name if key else "")
            src, ca, pa = _join(link, parent_first=rng.random() < 0.3)
            if key is None:
                select, group = _group_key(g, parent, pa)
            else:
                select = group = f"{pa}.{key.sql}"
            measures = _measures(child)
            if measures and rng.random() < 0.5:
                c = rng.choice(measures)
                agg = rng.choice(["AVG", "SUM"] if _summable(c) else ["AVG", "MAX", "MIN"])
                expr = f"{agg}({ca}.{c.sql})"
                sql = f"SELECT {select}, {expr} FROM {src} GROUP BY {group}"
                yield _Cand("join_group", sql, _join_group_say(link, key, c, agg), "groups", child.name, min_rows=2)
            else:
                sql = f"SELECT {select}, COUNT(*) FROM {src} GROUP BY {group}"
                yield _Cand(
                    "join_group", sql, _join_group_say(link, key, None, "COUNT"), "groups", child.name, min_rows=2
                )


def _join_group_say(link: Link, key: Col | None, c: Col | None, agg: str) -> Say:
    child, r_, rz = link.child, link.role, link.role_zh

    def say(lang: str, r: random.Random) -> list[str]:
        if lang == "en":
            if key is not None:
                kn = f"{r_} {_cname(key, r)}"
                if c is None:
                    return [
                        f"How many {child.pl} are there for each {kn}?",
                        f"For each {kn}, count the {child.pl}.",
                        f"What is the number of {child.pl} per {kn}?",
                    ]
                n, w = _cname(c, r), _pick(r, AGG_EN[agg])
                return [
                    f"What is the {w} {n} of {child.pl} for each {kn}?",
                    f"For each {kn}, what is the {w} {n} of the {child.pl}?",
                    f"Show the {w} {n} of {child.pl} per {kn}.",
                ]
            show = _role_label_en(link, r)
            if c is None:
                return [
                    f"How many {child.pl} does each {r_} have? Show {show}.",
                    f"For each {r_}, how many {child.pl} are there? Give {show}.",
                    f"Count the {child.pl} of each {r_}, showing {show}.",
                    f"List each {r_}'s {_label_en(link.parent, False, r)} with the number of {child.pl}.",
                ]
            n, w = _cname(c, r), _pick(r, AGG_EN[agg])
            return [
                f"For each {r_}, what is the {w} {n} of its {child.pl}? Show {show}.",
                f"What is the {w} {n} of {child.pl} for each {r_}? Give {show}.",
                f"List each {r_}'s {_label_en(link.parent, False, r)} with the {w} {n} of its {child.pl}.",
            ]
        if key is not None:
            kz = f"{rz}{key.zh}"
            if c is None:
                return [f"每个{kz}有多少{child.zh}?", f"按{kz}统计{child.zh}的数量。", f"各{kz}的{child.zh}数量是多少?"]
            a = AGG_ZH[agg]
            return [f"每个{kz}的{child.zh}{a}{c.zh}是多少?", f"按{kz}统计{child.zh}的{a}{c.zh}。"]
        lab = _label_zh(link.parent, r)
        if c is None:
            return [
                f"每个{rz}有多少{child.zh}?请给出{rz}的{lab}。",
                f"按{rz}统计{child.zh}的数量,并给出{rz}的{lab}。",
                f"各{rz}的{child.zh}数量是多少?给出{rz}{lab}。",
            ]
        a = AGG_ZH[agg]
        return [
            f"每个{rz}的{child.zh}{a}{c.zh}是多少?请给出{rz}的{lab}。",
            f"按{rz}统计{child.zh}的{a}{c.zh},并给出{rz}{lab}。",
        ]

    return say


def _fam_join_top(g: _Gen) -> Iterator[_Cand]:
    for link in _plain_links(g):
        child, parent = link.child, link.parent
        if not _named(parent):
            continue
        rng = g.rng("join_top", child.name, link.fk.name)
        src, _, pa = _join(link, parent_first=rng.random() < 0.5)
        select, group = _group_key(g, parent, pa)
        most = rng.random() < 0.75
        d = "DESC" if most else "ASC"
        if rng.random() < 0.6:
            sql = f"SELECT {select} FROM {src} GROUP BY {group} ORDER BY COUNT(*) {d} LIMIT 1"
            probe = f"SELECT COUNT(*) FROM {src} GROUP BY {group} ORDER BY COUNT(*) {d} LIMIT 2"
            yield _Cand("join_top", sql, _join_top_say(link, most, 1), "top", child.name, probe=(probe, _ties_free(1)))
        else:
            k = 3
            sql = f"SELECT {select}, COUNT(*) FROM {src} GROUP BY {group} ORDER BY COUNT(*) DESC LIMIT {k}"
            probe = f"SELECT COUNT(*) FROM {src} GROUP BY {group} ORDER BY COUNT(*) DESC LIMIT {k + 1}"
            yield _Cand("join_top", sql, _join_top_say(link, True, k), "top", child.name, probe=(probe, _ties_free(k)))


def _join_top_say(link: Link, most: bool, k: int) -> Say:
    child, r_, rz = link.child, link.role, link.role_zh

    def say(lang: str, r: random.Random) -> list[str]:
        if lang == "en":
            lab1 = _label_en(link.parent, False, r)
            if k == 1:
                w = "most" if most else "fewest"
                return [
                    f"Which {r_} has the {w} {child.pl}? Give the {lab1}.",
                    f"What is the {lab1} of the {r_} with the {w} {child.pl}?",
                    f"Find the {r_} that has the {w} {child.pl}, and give {_its(link.parent)} {lab1}.",
                ]
            kk, rs = _k_en(k, r), plural_phrase(r_)
            lab = _label_en(link.parent, True, r)
            return [
                f"What are the top {kk} {rs} by number of {child.pl}? Show the {lab} and the count.",
                f"Which {kk} {rs} have the most {child.pl}? Give their {lab} and how many {child.pl} each has.",
                f"List the {kk} {rs} with the most {child.pl}, with their {lab} and the number of {child.pl}.",
            ]
        lab = _label_zh(link.parent, r)
        if k == 1:
            w = "最多" if most else "最少"
            return [
                f"哪个{rz}的{child.zh}{w}?给出{lab}。",
                f"{child.zh}{w}的{rz}是{'谁' if _person(link.parent) else '哪个'}?请给出{lab}。",
                f"拥有{w}{child.zh}的{rz}的{lab}是什么?",
            ]
        kk = _k_zh(k, r)
        return [
            f"{child.zh}最多的前{kk}个{rz}是哪些?给出{lab}和{child.zh}数量。",
            f"按{child.zh}数量从多到少,列出前{kk}个{rz}的{lab}及其数量。",
        ]

    return say


def _chains(g: _Gen) -> list[tuple[Link, Link]]:
    out = []
    for l1 in _plain_links(g):
        for l2 in _plain_links(g):
            if l2.child is l1.parent and l2.parent is not l1.child and l2.parent is not l1.parent:
                out.append((l1, l2))
    return out


def _fam_join2(g: _Gen) -> Iterator[_Cand]:
    for l1, l2 in _chains(g):
        a, b, c = l1.child, l1.parent, l2.parent
        xa, xb, xc = a.alias, b.alias, c.alias
        src = (
            f"{a.sql} AS {xa} JOIN {b.sql} AS {xb} ON {xa}.{l1.fk.sql} = {xb}.{l1.pk.sql} "
            f"JOIN {c.sql} AS {xc} ON {xb}.{l2.fk.sql} = {xc}.{l2.pk.sql}"
        )
        rng = g.rng("join2", a.name, l1.fk.name, l2.fk.name)
        pcols = list(c.categories) + ([c.label[0]] if _named(c) and len(c.label) == 1 else [])
        for pc in pcols[:2]:
            for v in _values(g, pc, f"join2|{a.name}|{l2.fk.name}", 1):
                cond = join_cond(g, l2, pc, v, xc)
                sql = f"SELECT COUNT(*) FROM {src} WHERE {cond.sql}"
                yield _Cand("join2", sql, _join2_filter_say(l1, cond), "count", a.name)
        keys: list[Col | None] = [None] if _named(c) else []
        keys += _groupable(c)[:1]
        for key in keys:
            if key is None:
                select, group = _group_key(g, c, xc)
            else:
                select = group = f"{xc}.{key.sql}"
            measures = _measures(a)
            if measures and rng.random() < 0.5:
                m = rng.choice(measures)
                agg = "SUM" if _summable(m) else "AVG"
                sql = f"SELECT {select}, {agg}({xa}.{m.sql}) FROM {src} GROUP BY {group}"
                yield _Cand("join2", sql, _join2_group_say(l1, l2, key, m, agg), "groups", a.name, min_rows=2)
            else:
                sql = f"SELECT {select}, COUNT(*) FROM {src} GROUP BY {group}"
                yield _Cand("join2", sql, _join2_group_say(l1, l2, key, None, "COUNT"), "groups", a.name, min_rows=2)


def _join2_filter_say(l1: Link, cond: Cond) -> Say:
    a, mids = l1.child, plural_phrase(l1.role)

    def say(lang: str, r: random.Random) -> list[str]:
        if lang == "en":
            return [
                f"How many {a.pl} belong to {mids} {_pick(r, cond.mod)}?",
                f"How many {a.pl} are there for {mids} {_pick(r, cond.mod)}?",
                f"Count the {a.pl} of {mids} {_pick(r, cond.mod)}.",
                f"What is the number of {a.pl} for {mids} {_pick(r, cond.mod)}?",
            ]
        m = _pick(r, cond.zh)
        return [
            f"{m}的{l1.role_zh}共有多少{a.zh}?",
            f"{m}的{l1.role_zh}对应的{a.zh}有多少个?",
            f"统计{m}的{l1.role_zh}的{a.zh}数量。",
        ]

    return say


def _join2_group_say(l1: Link, l2: Link, key: Col | None, m: Col | None, agg: str) -> Say:
    a, mids, r2, r2z = l1.child, plural_phrase(l1.role), l2.role, l2.role_zh

    def say(lang: str, r: random.Random) -> list[str]:
        if lang == "en":
            if key is not None:
                kn = f"{r2} {_cname(key, r)}"
                if m is None:
                    return [
                        f"How many {a.pl} are there for each {kn}?",
                        f"For each {kn}, count the {a.pl} of its {mids}.",
                        f"What is the number of {a.pl} per {kn}?",
                    ]
                n, w = _cname(m, r), _pick(r, AGG_EN[agg])
                return [
                    f"What is the {w} {n} of {a.pl} for each {kn}?",
                    f"For each {kn}, what is the {w} {n} of the {a.pl} of its {mids}?",
                ]
            show = _role_label_en(l2, r)
            if m is None:
                return [
                    f"For each {r2}, how many {a.pl} are there for its {mids}? Show {show}.",
                    f"How many {a.pl} does each {r2} have through its {mids}? Give {show}.",
                    f"Count the {a.pl} of each {r2}'s {mids}, showing {show}.",
                ]
            n, w = _cname(m, r), _pick(r, AGG_EN[agg])
            return [
                f"For each {r2}, what is the {w} {n} of the {a.pl} for its {mids}? Show {show}.",
                f"What is the {w} {n} of {a.pl} for each {r2}, through its {mids}? Give {show}.",
            ]
        if key is not None:
            kz = f"{r2z}{key.zh}"
            if m is None:
                return [f"每个{kz}的{l1.role_zh}共有多少{a.zh}?", f"按{kz}统计{a.zh}的数量。"]
            return [f"每个{kz}的{a.zh}{AGG_ZH[agg]}{m.zh}是多少?", f"按{kz}统计{a.zh}的{AGG_ZH[agg]}{m.zh}。"]
        lab = _label_zh(l2.parent, r)
        if m is None:
            return [
                f"每个{r2z}的{l1.role_zh}共有多少{a.zh}?请给出{r2z}的{lab}。",
                f"按{r2z}统计{a.zh}的数量,并给出{r2z}{lab}。",
            ]
        return [
            f"每个{r2z}的{l1.role_zh}对应的{a.zh}{AGG_ZH[agg]}{m.zh}是多少?请给出{r2z}的{lab}。",
            f"按{r2z}统计{a.zh}的{AGG_ZH[agg]}{m.zh},并给出{r2z}{lab}。",
        ]

    return say


def _fam_self_join(g: _Gen) -> Iterator[_Cand]:
    for link in g.s.links:
        if not link.self_ref or not _named(link.child):
            continue
        t = link.child
        x1, x2 = f"{t.alias}1", f"{t.alias}2"
        src = f"{t.sql} AS {x1} JOIN {t.sql} AS {x2} ON {x1}.{link.fk.sql} = {x2}.{link.pk.sql}"
        for c in _measures(t)[:2]:
            sql = f"SELECT {_label_sql(t, x1)} FROM {src} WHERE {x1}.{c.sql} > {x2}.{c.sql}"
            yield _Cand("self_join", sql, _self_cmp_say(link, c), "list", t.name)
        select, group = _group_key(g, t, x2)
        sql = f"SELECT {select}, COUNT(*) FROM {src} GROUP BY {group}"
        yield _Cand("self_join", sql, _self_count_say(link), "groups", t.name, min_rows=2)
        for pc in t.categories[:1]:
            for v in _values(g, pc, "self_join", 1):
                cond = join_cond(g, link, pc, v, x2)
                sql = f"SELECT {_label_sql(t, x1)} FROM {src} WHERE {cond.sql}"
                yield _Cand("self_join", sql, _join_list_say(t, cond), "list", t.name)


def _self_cmp_say(link: Link, c: Col) -> Say:
    t, r_, rz = link.child, link.role, link.role_zh
    pay = c.has(_PAY_WORDS)

    def say(lang: str, r: random.Random) -> list[str]:
        if lang == "en":
            n, lab = _cname(c, r), _label_en(t, True, r)
            out = [
                f"Which {t.pl} have a higher {n} than their {r_}? Give their {lab}.",
                f"List the {lab} of {t.pl} whose {n} is greater than their {r_}'s.",
                f"Find the {t.pl} with a {n} above that of their {r_}, and show their {lab}.",
            ]
            if pay:
                out += [f"Which {t.pl} earn more than their {r_}? List their {lab}."]
            return out
        lab = _label_zh(t, r)
        return [f"哪些{t.zh}的{c.zh}比他们的{rz}高?给出{lab}。", f"列出{c.zh}高于其{rz}的{t.zh}的{lab}。"]

    return say


def _self_count_say(link: Link) -> Say:
    t, r_, rz = link.child, link.role, link.role_zh

    def say(lang: str, r: random.Random) -> list[str]:
        if lang == "en":
            lab = _label_en(t, True, r)
            return [
                f"How many {t.pl} does each {r_} have? Show the {r_}'s {lab}.",
                f"For each {r_}, count the {t.pl} they have, with the {r_}'s {lab}.",
                f"List each {r_}'s {lab} with the number of {t.pl} under them.",
            ]
        lab = _label_zh(t, r)
        return [f"每个{rz}有多少{t.zh}?给出{rz}的{lab}。", f"按{rz}统计{t.zh}的数量,并给出{rz}的{lab}。"]

    return say


# --- dates ----------------------------------------------------------------------------------------------


def _date_forms(col: Col) -> list[str]:
    return ["range", "strftime", "like"] if col.text_dates else ["range", "strftime"]


def _fam_date_year(g: _Gen) -> Iterator[_Cand]:
    for t in g.s.tables:
        for c in _date_cols(t):
            years = _years(c)
            rng = g.rng("date_year", t.name, c.name)
            for y in years[:3]:
                cond = year_cond(g, t, c, y, rng.choice(_date_forms(c)))
                roll = rng.random()
                measures = _measures(t)
                if roll < 0.5:
                    yield _year_count(t, c, cond, y)
                elif roll < 0.7 and measures:
                    m = rng.choice(measures)
                    yield _agg_cand("date_year", g, t, m, "SUM" if _summable(m) else "AVG", cond)
                elif _named(t) and sum(v[:4] == str(y) for v in c.values) / len(c.values) * t.rows <= LIST_MAX * 0.75:
                    yield _list_where("date_year", t, cond)
                else:
                    yield _year_count(t, c, cond, y)
            if years:
                y = years[0]
                months = Counter(int(v[5:7]) for v in c.values if v[:4] == str(y) and v[5:7].isdigit())
                if months:
                    month = rng.choice(sorted(months))
                    cond = month_cond(g, t, c, y, month, rng.choice(_date_forms(c)))
                    yield _count_where("date_year", t, cond)


def _year_count(t: Tab, c: Col, cond: Cond, year: int) -> _Cand:
    cand = _count_where("date_year", t, cond)
    verb, own = _date_verb(t, c)
    base = cand.say
    single = len(_date_cols(t)) == 1

    def say(lang: str, r: random.Random) -> list[str]:
        out = base(lang, r)
        if lang == "en":
            if own and single:
                out += [f"How many {t.pl} were there in {year}?", f"How many {t.pl} are from {year}?"]
            if verb:
                out += [f"How many {t.pl} {_were(verb)} in {year}?", f"In {year}, how many {t.pl} {_were(verb)}?"]
            return out
        vz = _verb_zh(verb)
        if own and single:
            out += [f"{year}年有多少{t.zh}?", f"{year}年的{t.zh}有多少个?"]
        if vz:
            out += [f"{year}年有多少{t.zh}{vz}?", f"{year}年{vz}的{t.zh}有多少个?"]
        return out

    cand.say = say
    return cand


def _fam_date_group(g: _Gen) -> Iterator[_Cand]:
    for t in g.s.tables:
        names = {c.name.lower() for c in t.cols}
        ya = "year" if "year" not in names else "yr"
        ma = "month" if "month" not in names else "mon"
        for c in _date_cols(t):
            years = _years(c)
            if len(years) < 2:
                continue
            rng = g.rng("date_group", t.name, c.name)
            ye = g.year(c.sql)
            ordered = rng.random() < 0.5
            sql = f"SELECT {ye} AS {ya}, COUNT(*) FROM {t.sql} GROUP BY {ye}" + (f" ORDER BY {ye}" if ordered else "")
            yield _Cand("date_group", sql, _per_year_say(t, c, None, ""), "groups", t.name, min_rows=2)
            measures = _measures(t)
            if measures:
                m = rng.choice(measures)
                agg = "SUM" if _summable(m) else "AVG"
                sql = f"SELECT {ye} AS {ya}, {agg}({m.sql}) FROM {t.sql} GROUP BY {ye}"
                yield _Cand("date_group", sql, _per_year_say(t, c, m, agg), "groups", t.name, min_rows=2)
            y = years[0]
            me = g.month(c.sql)
            sql = f"SELECT {me} AS {ma}, COUNT(*) FROM {t.sql} WHERE {ye} = '{y}' GROUP BY {me} ORDER BY {me}"
            yield _Cand("date_group", sql, _per_month_say(t, c, y), "groups", t.name, min_rows=2)


def _per_year_say(t: Tab, c: Col, m: Col | None, agg: str) -> Say:
    verb, own = _date_verb(t, c)
    single = len(_date_cols(t)) == 1

    def say(lang: str, r: random.Random) -> list[str]:
        if lang == "en":
            n = _cname(c, r)
            if m is not None:
                mn, w = _cname(m, r), _pick(r, AGG_EN[agg])
                out = [
                    f"What is the {w} {mn} of {t.pl} for each year of {n}?",
                    f"For each {n} year, what is the {w} {mn} of {t.pl}?",
                ]
                if verb:
                    out += [f"What is the {w} {mn} of the {t.pl} {verb} in each year?"]
                elif own and single:
                    out += [f"What is the {w} {mn} of {t.pl} per year?"]
                return out
            out = [f"How many {t.pl} are there for each year of {n}?", f"Count the {t.pl} per {n} year."]
            if verb:
                out += [
                    f"How many {t.pl} {_were(verb)} in each year?",
                    f"For each year, how many {t.pl} {_were(verb)}?",
                ]
            elif own and single:
                out += [f"How many {t.pl} were there in each year?", f"Count the {t.pl} per year."]
            return out
        vz = _verb_zh(verb)
        if m is not None:
            a = AGG_ZH[agg]
            return (
                [f"按{c.zh}的年份统计{t.zh}的{a}{m.zh}。", f"每年{t.zh}的{a}{m.zh}是多少?"]
                if (own and single) or vz
                else [f"按{c.zh}的年份统计{t.zh}的{a}{m.zh}。"]
            )
        out = [f"按{c.zh}的年份统计{t.zh}的数量。", f"{c.zh}每年各有多少{t.zh}?"]
        if vz:
            out += [f"每年有多少{t.zh}{vz}?", f"每一年{vz}的{t.zh}分别有多少?"]
        elif own and single:
            out += [f"每年有多少{t.zh}?", f"按年份统计{t.zh}的数量。"]
        return out

    return say


def _per_month_say(t: Tab, c: Col, year: int) -> Say:
    verb, own = _date_verb(t, c)
    single = len(_date_cols(t)) == 1

    def say(lang: str, r: random.Random) -> list[str]:
        if lang == "en":
            n = _cname(c, r)
            out = [
                f"How many {t.pl} have {article(n)} {n} in each month of {year}?",
                f"For each month of {year}, count the {t.pl} by {n}.",
            ]
            if verb:
                out += [
                    f"How many {t.pl} {_were(verb)} in each month of {year}?",
                    f"Show the number of {t.pl} {verb} per month in {year}.",
                ]
            elif own and single:
                out += [
                    f"How many {t.pl} were there in each month of {year}?",
                    f"Show the number of {t.pl} per month in {year}.",
                ]
            return out
        vz = _verb_zh(verb)
        out = [f"按月统计{c.zh}在{year}年的{t.zh}数量。"]
        if vz:
            out += [f"{year}年每个月有多少{t.zh}{vz}?", f"{year}年每月{vz}的{t.zh}数量是多少?"]
        elif own and single:
            out += [f"{year}年每个月的{t.zh}数量是多少?", f"按月统计{year}年的{t.zh}数量。"]
        return out

    return say


def _fam_date_compare(g: _Gen) -> Iterator[_Cand]:
    for t in g.s.tables:
        for c in _date_cols(t):
            vals = c.values
            if len(vals) < 4:
                continue
            for after in (True, False):
                q = 0.8 if after else 0.2
                raw = vals[int(q * (len(vals) - 1))][:10]
                day = f"{int(raw[:4]) - 1}-12-31" if after else f"{raw[:4]}-01-01"
                if not vals[0][:10] < day < vals[-1][:10]:
                    day = raw
                op = ">" if after else "<"
                estimate = sum((v[:10] > day) if after else (v[:10] < day) for v in vals) / len(vals) * t.rows
                if _named(t) and estimate <= LIST_MAX * 0.75:
                    sql = f"SELECT {_label_sql(t)} FROM {t.sql} WHERE {c.sql} {op} '{day}' ORDER BY {c.sql}"
                    probe = f"SELECT {c.sql} FROM {t.sql} WHERE {c.sql} {op} '{day}' ORDER BY {c.sql}"
                    say = _date_cmp_say(t, c, after, day, True)
                    yield _Cand("date_compare", sql, say, "list", t.name, probe=(probe, _all_distinct))
                else:
                    sql = f"SELECT COUNT(*) FROM {t.sql} WHERE {c.sql} {op} '{day}'"
                    yield _Cand("date_compare", sql, _date_cmp_say(t, c, after, day, False), "count", t.name)


def _date_cmp_say(t: Tab, c: Col, after: bool, day: str, listing: bool) -> Say:
    verb, _ = _date_verb(t, c)
    w = "after" if after else "before"

    def say(lang: str, r: random.Random) -> list[str]:
        if lang == "en":
            n = _cname(c, r)
            mods = [f"whose {n} is {w} {day}", f"with {article(n)} {n} {'later' if after else 'earlier'} than {day}"]
            if verb:
                mods += [f"{verb} {w} {day}"]
            if listing:
                lab = _label_en(t, True, r)
                return [
                    f"List the {lab} of {t.pl} {_pick(r, mods)}, ordered by {n}.",
                    f"Show the {lab} of {t.pl} {_pick(r, mods)}, from the earliest {n} to the latest.",
                    f"Which {t.pl} have {article(n)} {n} {w} {day}? Give their {lab} sorted by {n}.",
                ]
            return [f"How many {t.pl} have {article(n)} {n} {w} {day}?", f"Count the {t.pl} {_pick(r, mods)}."] + (
                [f"How many {t.pl} {_were(verb)} {w} {day}?"] if verb else []
            )
        vz = _verb_zh(verb)
        wz = "之后" if after else "之前"
        mods = [f"{c.zh}在{day}{wz}", f"{c.zh}{'晚于' if after else '早于'}{day}"] + (
            [f"在{day}{wz}{vz}"] if vz else []
        )
        if listing:
            lab = _label_zh(t, r)
            return [
                f"列出{_pick(r, mods)}的{t.zh}的{lab},按{c.zh}排序。",
                f"{_pick(r, mods)}的{t.zh}有哪些?按{c.zh}从早到晚列出{lab}。",
            ]
        return [f"{_pick(r, mods)}的{t.zh}有多少个?", f"统计{_pick(r, mods)}的{t.zh}数量。"]

    return say


# --- arithmetic -----------------------------------------------------------------------------------------


def _fam_arithmetic(g: _Gen) -> Iterator[_Cand]:
    for t in g.s.tables:
        measures = _measures(t)
        counts = [c for c in measures if c.has(_COUNT_WORDS) and not c.ratio]
        money = [c for c in measures if c.has(_MONEY_WORDS) and not c.ratio and c not in counts]
        discounts = [c for c in measures if c.ratio and c.has(_DISCOUNT_WORDS)]
        rng = g.rng("arithmetic", t.name)
        for q in counts:
            for p in money:
                for d in [None, *discounts]:
                    expr = f"{q.sql} * {p.sql}" + (f" * (1 - {d.sql})" if d else "")
                    yield _Cand(
                        "arithmetic", f"SELECT SUM({expr}) FROM {t.sql}", _arith_say(t, q, p, d, None), "scalar", t.name
                    )
                    for gcol in _groupable(t)[:1]:
                        sql = f"SELECT {gcol.sql}, SUM({expr}) FROM {t.sql} GROUP BY {gcol.sql}"
                        yield _Cand(
                            "arithmetic",
                            sql,
                            _arith_say(t, q, p, d, gcol.names[0], gcol.zh),
                            "groups",
                            t.name,
                            min_rows=2,
                        )
                    for link in [lk for lk in _plain_links(g) if lk.child is t]:
                        src, ca, pa = _join(link)
                        aexpr = f"{ca}.{q.sql} * {ca}.{p.sql}" + (f" * (1 - {ca}.{d.sql})" if d else "")
                        for key in _groupable(link.parent)[:1]:
                            sql = f"SELECT {pa}.{key.sql}, SUM({aexpr}) FROM {src} GROUP BY {pa}.{key.sql}"
                            say = _arith_say(t, q, p, d, f"{link.role} {key.names[0]}", f"{link.role_zh}{key.zh}")
                            yield _Cand("arithmetic", sql, say, "groups", t.name, min_rows=2)
                        if _named(link.parent) and rng.random() < 0.5:
                            select, group = _group_key(g, link.parent, pa)
                            sql = (
                                f"SELECT {select}, SUM({aexpr}) FROM {src} GROUP BY {group} "
                                f"ORDER BY SUM({aexpr}) DESC LIMIT 1"
                            )
                            probe = (
                                f"SELECT SUM({aexpr}) FROM {src} GROUP BY {group} ORDER BY SUM({aexpr}) DESC LIMIT 2"
                            )
                            yield _Cand(
                                "arithmetic",
                                sql,
                                _arith_top_say(t, q, p, d, link),
                                "top",
                                t.name,
                                probe=(probe, _ties_free(1)),
                            )
        prices = [c for c in money if c.has(_PRICE_WORDS)]
        costs = [c for c in money if c.has({"cost"})]
        for p in prices:
            for c in costs:
                sql = f"SELECT AVG({p.sql} - {c.sql}) FROM {t.sql}"
                yield _Cand("arithmetic", sql, _diff_say(t, p, c), "scalar", t.name)


def _expr_en(q: Col, p: Col, d: Col | None, r: random.Random) -> str:
    qn, pn = _cname(q, r), _cname(p, r)
    if d is None:
        return _pick(r, [f"{qn} times {pn}", f"{qn} multiplied by {pn}", f"{qn} × {pn}"])
    dn = _cname(d, r)
    return _pick(
        r, [f"{qn} times {pn} times one minus {dn}", f"{qn} × {pn} × (1 - {dn})", f"{qn} times {pn} after {dn}"]
    )


def _expr_zh(q: Col, p: Col, d: Col | None, r: random.Random) -> str:
    if d is None:
        return _pick(r, [f"{q.zh}乘以{p.zh}", f"{q.zh}×{p.zh}"])
    return _pick(r, [f"{q.zh}×{p.zh}×(1-{d.zh})", f"{q.zh}乘以{p.zh}再乘以(1减{d.zh})"])


def _arith_say(t: Tab, q: Col, p: Col, d: Col | None, group: str | None, group_zh: str = "") -> Say:
    sales = bool({"order", "sale", "invoice", "transaction", "line"} & set(t.sg.split(" ")))

    def say(lang: str, r: random.Random) -> list[str]:
        if lang == "en":
            e = _expr_en(q, p, d, r)
            if group:
                out = [
                    f"What is the total of {e} for each {group}?",
                    f"For each {group}, what is the sum of {e} over its {t.pl}?",
                    f"Show the sum of {e} of {t.pl} per {group}.",
                ]
                if sales:
                    out += [f"What is the total revenue ({e}) of each {group}?"]
                return out
            out = [
                f"What is the total of {e} over all {t.pl}?",
                f"What is the sum of {e} for all {t.pl}?",
                f"Compute the sum of {e} across all {t.pl}.",
            ]
            if sales:
                out += [f"What is the total revenue, computed as {e}, of all {t.pl}?"]
            return out
        e = _expr_zh(q, p, d, r)
        if group:
            out = [f"每个{group_zh}的{e}的总和是多少?", f"按{group_zh}统计{t.zh}的{e}之和。"]
            if sales:
                out += [f"每个{group_zh}的销售额({e})是多少?"]
            return out
        out = [f"所有{t.zh}的{e}的总和是多少?", f"计算{t.zh}的{e}之和。"]
        if sales:
            out += [f"{t.zh}的总销售额({e})是多少?"]
        return out

    return say


def _arith_top_say(t: Tab, q: Col, p: Col, d: Col | None, link: Link) -> Say:
    def say(lang: str, r: random.Random) -> list[str]:
        if lang == "en":
            e, lab = _expr_en(q, p, d, r), _label_en(link.parent, False, r)
            its = _its(link.parent)
            return [
                f"Which {link.role} has the highest total of {e} over {its} {t.pl}? Show {its} {lab} and the total.",
                f"What is the {lab} of the {link.role} with the largest sum of {e}, and what is that sum?",
            ]
        e, lab = _expr_zh(q, p, d, r), _label_zh(link.parent, r)
        return [
            f"{e}总和最高的{link.role_zh}是哪个?给出{lab}和总额。",
            f"哪个{link.role_zh}的{t.zh}{e}合计最大?列出{lab}及合计。",
        ]

    return say


def _diff_say(t: Tab, p: Col, c: Col) -> Say:
    def say(lang: str, r: random.Random) -> list[str]:
        if lang == "en":
            pn, cn = _cname(p, r), _cname(c, r)
            return [
                f"What is the average difference between {pn} and {cn} of {t.pl}?",
                f"On average, how much higher is the {pn} than the {cn} for {t.pl}?",
                f"What is the average of {pn} minus {cn} across all {t.pl}?",
            ]
        return [f"{t.zh}的{p.zh}与{c.zh}之差的平均值是多少?", f"平均来看,{t.zh}的{p.zh}比{c.zh}高多少?"]

    return say


# --- nested queries -------------------------------------------------------------------------------------


def _fam_not_in(g: _Gen) -> Iterator[_Cand]:
    for link in g.s.links:
        parent, child = link.parent, link.child
        if not _named(parent):
            continue
        sub = f"SELECT {link.fk.sql} FROM {child.sql}" + (f" WHERE {link.fk.sql} IS NOT NULL" if link.fk.nulls else "")
        rng = g.rng("not_in", child.name, link.fk.name)
        if rng.random() < 0.7:
            sql = f"SELECT {_label_sql(parent)} FROM {parent.sql} WHERE {link.pk.sql} NOT IN ({sub})"
            yield _Cand("not_in", sql, _not_in_say(link, True), "list", parent.name)
        else:
            sql = f"SELECT COUNT(*) FROM {parent.sql} WHERE {link.pk.sql} NOT IN ({sub})"
            yield _Cand("not_in", sql, _not_in_say(link, False), "count", parent.name)
        if link.role != parent.sg:
            continue
        for c in child.categories[:2]:  # "customers with no cancelled orders"
            for v in _values(g, c, f"not_in|{parent.name}", 1):
                cond = eq_cond(g, child, c, v)
                where = cond.sql + (f" AND {link.fk.sql} IS NOT NULL" if link.fk.nulls else "")
                sql = (
                    f"SELECT {_label_sql(parent)} FROM {parent.sql} WHERE {link.pk.sql} NOT IN "
                    f"(SELECT {link.fk.sql} FROM {child.sql} WHERE {where})"
                )
                yield _Cand("not_in", sql, _not_in_cond_say(link, cond), "list", parent.name)


def _not_in_cond_say(link: Link, cond: Cond) -> Say:
    parent, child = link.parent, link.child

    def say(lang: str, r: random.Random) -> list[str]:
        if lang == "en":
            lab, kids = _label_en(parent, True, r), f"{child.pl} {_pick(r, cond.mod)}"
            out = [
                f"Which {parent.pl} have no {kids}? Give their {lab}.",
                f"List the {lab} of {parent.pl} without any {kids}.",
                f"Find the {parent.pl} that do not have any {kids}, and show their {lab}.",
            ]
            if cond.pre:
                out += [f"Which {parent.pl} have no {_pick(r, cond.pre)} {child.pl}? Give their {lab}."]
            return out
        lab, z = _label_zh(parent, r), _pick(r, cond.zh)
        return [
            f"哪些{parent.zh}没有{z}的{child.zh}?给出{lab}。",
            f"列出没有任何{z}的{child.zh}的{parent.zh}的{lab}。",
            f"没有{z}的{child.zh}的{parent.zh}有哪些?请列出{lab}。",
        ]

    return say


def _not_in_say(link: Link, listing: bool) -> Say:
    parent, child = link.parent, link.child
    own = link.role == parent.sg  # orders.customer_id: customers "with no orders"

    def say(lang: str, r: random.Random) -> list[str]:
        if lang == "en":
            lab = _label_en(parent, True, r)
            if own:
                mods = [
                    f"that have no {child.pl}",
                    f"without any {child.pl}",
                    f"that do not appear in any {child.sg}",
                    f"with no {child.pl}",
                ]
                preds = [f"have no {child.pl}", f"do not have any {child.pl}", f"never appear in any {child.sg}"]
            else:
                mods = [f"that are not the {link.role} of any {child.sg}"]
                preds = [f"are not the {link.role} of any {child.sg}", f"are never {article(link.role)} {link.role}"]
            if listing:
                return [
                    f"Which {parent.pl} {_pick(r, preds)}? Give their {lab}.",
                    f"List the {lab} of {parent.pl} {_pick(r, mods)}.",
                    f"Find the {parent.pl} {_pick(r, mods)}, and show their {lab}.",
                ]
            return [
                f"How many {parent.pl} are there {_pick(r, mods)}?",
                f"Count the {parent.pl} {_pick(r, mods)}.",
                f"What is the number of {parent.pl} {_pick(r, mods)}?",
            ]
        lab = _label_zh(parent, r)
        if own:
            mods = [f"没有任何{child.zh}的", f"从未出现在{child.zh}中的", f"没有{child.zh}的"]
        else:
            mods = [f"不是任何{child.zh}的{link.role_zh}的"]
        if listing:
            return [
                f"哪些{parent.zh}没有任何{child.zh}?给出{lab}。"
                if own
                else f"哪些{parent.zh}不是任何{child.zh}的{link.role_zh}?给出{lab}。",
                f"列出{_pick(r, mods)}{parent.zh}的{lab}。",
                f"{_pick(r, mods)}{parent.zh}有哪些?请列出{lab}。",
            ]
        return [f"{_pick(r, mods)}{parent.zh}有多少个?", f"统计{_pick(r, mods)}{parent.zh}的数量。"]

    return say


def _fam_above_average(g: _Gen) -> Iterator[_Cand]:
    for t in g.s.tables:
        for c in _measures(t):
            rng = g.rng("above_average", t.name, c.name)
            above = rng.random() < 0.65
            op = ">" if above else "<"
            share = sum((v > sum(c.values) / len(c.values)) == above for v in c.values) / len(c.values)
            sub = f"(SELECT AVG({c.sql}) FROM {t.sql})"
            if _named(t) and share * t.rows <= LIST_MAX * 0.75:
                sql = f"SELECT {_label_sql(t)} FROM {t.sql} WHERE {c.sql} {op} {sub}"
                yield _Cand("above_average", sql, _avg_cmp_say(t, c, above, True), "list", t.name)
            else:
                sql = f"SELECT COUNT(*) FROM {t.sql} WHERE {c.sql} {op} {sub}"
                yield _Cand("above_average", sql, _avg_cmp_say(t, c, above, False), "count", t.name)
        measures = _measures(t)
        for gcol in _groupable(t) if measures else []:  # groups whose average beats the overall one
            c = g.rng("above_average", t.name, gcol.name).choice(measures)
            sql = (
                f"SELECT {gcol.sql} FROM {t.sql} GROUP BY {gcol.sql} "
                f"HAVING AVG({c.sql}) > (SELECT AVG({c.sql}) FROM {t.sql})"
            )
            yield _Cand("above_average", sql, _group_avg_cmp_say(t, gcol, c), "list", t.name)


def _group_avg_cmp_say(t: Tab, gcol: Col, c: Col) -> Say:
    def say(lang: str, r: random.Random) -> list[str]:
        if lang == "en":
            gs, n = _cplural(gcol, r), _cname(c, r)
            return [
                f"Which {gs} have an average {n} above the overall average?",
                f"List the {gs} whose {t.pl} have a higher average {n} than all {t.pl} together.",
                f"Find the {gs} with an average {n} greater than the average {n} of all {t.pl}.",
            ]
        return [
            f"哪些{gcol.zh}的平均{c.zh}高于整体平均{c.zh}?",
            f"平均{c.zh}超过所有{t.zh}平均{c.zh}的{gcol.zh}有哪些?",
        ]

    return say


def _avg_cmp_say(t: Tab, c: Col, above: bool, listing: bool) -> Say:
    price = c.has(_PRICE_WORDS)

    def say(lang: str, r: random.Random) -> list[str]:
        if lang == "en":
            n = _cname(c, r)
            hi = (
                _pick(r, ["above", "higher than", "greater than"])
                if above
                else _pick(r, ["below", "lower than", "less than"])
            )
            mods = [
                f"with {article(n)} {n} {hi} the average",
                f"whose {n} is {hi} the average {n}",
                f"with {article(n)} {n} {hi} the average {n} of all {t.pl}",
            ]
            if price:
                mods += [f"that cost {'more' if above else 'less'} than the average {n}"]
            if listing:
                lab = _label_en(t, True, r)
                return [
                    f"Which {t.pl} have {article(n)} {n} {hi} the average? Give their {lab}.",
                    f"List the {lab} of {t.pl} {_pick(r, mods)}.",
                    f"Find the {t.pl} {_pick(r, mods)}, showing their {lab}.",
                ]
            return [
                f"How many {t.pl} have {article(n)} {n} {hi} the average?",
                f"Count the {t.pl} {_pick(r, mods)}.",
                f"What is the number of {t.pl} {_pick(r, mods)}?",
            ]
        hz = _pick(r, ["高于", "超过"]) if above else _pick(r, ["低于", "小于"])
        mods = [f"{c.zh}{hz}平均{c.zh}", f"{c.zh}{hz}所有{t.zh}平均{c.zh}"]
        if listing:
            lab = _label_zh(t, r)
            return [
                f"{_pick(r, mods)}的{t.zh}有哪些?给出{lab}。",
                f"哪些{t.zh}的{c.zh}比平均值{'高' if above else '低'}?请列出{lab}。",
                f"列出{_pick(r, mods)}的{t.zh}的{lab}。",
            ]
        return [f"{_pick(r, mods)}的{t.zh}有多少个?", f"有多少{t.zh}的{c.zh}{'高于' if above else '低于'}平均值?"]

    return say


def _fam_in_subquery(g: _Gen) -> Iterator[_Cand]:
    for link in _plain_links(g):
        parent, child = link.parent, link.child
        if not _named(parent):
            continue
        conds: list[Cond] = []
        for c in child.categories[:2]:
            for v in _values(g, c, f"in_subquery|{parent.name}", 1):
                conds.append(eq_cond(g, child, c, v))
        for c in child.of_kind("flag")[:1]:
            conds.append(flag_cond(g, c))
        for cond in conds:
            sql = (
                f"SELECT {_label_sql(parent)} FROM {parent.sql} WHERE {link.pk.sql} IN "
                f"(SELECT {link.fk.sql} FROM {child.sql} WHERE {cond.sql})"
            )
            yield _Cand("in_subquery", sql, _in_sub_say(link, cond), "list", parent.name)


def _in_sub_say(link: Link, cond: Cond) -> Say:
    parent, child = link.parent, link.child
    own = link.role == parent.sg

    def say(lang: str, r: random.Random) -> list[str]:
        if lang == "en":
            lab = _label_en(parent, True, r)
            one = f"{child.sg} {_pick(r, cond.mod_sg)}"
            pre = _pick(r, cond.pre) if cond.pre else None
            if own:
                out = [
                    f"Which {parent.pl} have at least one {one}? Give their {lab}.",
                    f"List the {lab} of {parent.pl} that have {article(child.sg)} {one}.",
                ]
                if pre:
                    out += [f"Which {parent.pl} have {pre} {child.pl}? List their {lab}."]
                return out
            return [
                f"Which {parent.pl} are the {link.role} of at least one {one}? Give their {lab}.",
                f"List the {lab} of {parent.pl} that are the {link.role} of {article(child.sg)} {one}.",
            ]
        lab = _label_zh(parent, r)
        z = _pick(r, cond.zh)
        if own:
            return [
                f"哪些{parent.zh}有{z}的{child.zh}?给出{lab}。",
                f"列出至少有一个{z}的{child.zh}的{parent.zh}的{lab}。",
            ]
        return [f"哪些{parent.zh}是{z}的{child.zh}的{link.role_zh}?给出{lab}。"]

    return say


def _fam_in_both_years(g: _Gen) -> Iterator[_Cand]:
    for link in _plain_links(g):
        parent, child = link.parent, link.child
        if not _named(parent) or link.role != parent.sg:
            continue
        for c in [c for c in _date_cols(child) if any(_date_verb(child, c))][:1]:
            years = sorted(_years(c)[:2])
            if len(years) < 2:
                continue
            y1, y2 = years
            rng = g.rng("in_both_years", child.name, c.name)
            form = rng.choice(_date_forms(c))
            c1 = year_cond(g, child, c, y1, form)
            c2 = year_cond(g, child, c, y2, form)
            sub1 = f"SELECT {link.fk.sql} FROM {child.sql} WHERE {c1.sql}"
            sub2 = f"SELECT {link.fk.sql} FROM {child.sql} WHERE {c2.sql}"
            both = rng.random() < 0.6
            neg = "" if both else "NOT "
            sql = (
                f"SELECT {_label_sql(parent)} FROM {parent.sql} WHERE {link.pk.sql} IN ({sub1}) "
                f"AND {link.pk.sql} {neg}IN ({sub2})"
            )
            yield _Cand("in_both_years", sql, _both_years_say(link, c, y1, y2, both), "list", parent.name)


def _both_years_say(link: Link, c: Col, y1: int, y2: int, both: bool) -> Say:
    parent, child = link.parent, link.child
    verb, _ = _date_verb(child, c)
    vz = _verb_zh(verb) or ""
    kids = f"{child.pl} {verb}" if verb else child.pl  # "doctors hired" in both years

    def say(lang: str, r: random.Random) -> list[str]:
        if lang == "en":
            lab = _label_en(parent, True, r)
            if both:
                return [
                    f"Which {parent.pl} have {kids} in both {y1} and {y2}? Give their {lab}.",
                    f"List the {lab} of {parent.pl} with {kids} in {y1} as well as in {y2}.",
                    f"Find the {parent.pl} that had {kids} both in {y1} and in {y2}, showing their {lab}.",
                ]
            return [
                f"Which {parent.pl} had {kids} in {y1} but none in {y2}? Give their {lab}.",
                f"List the {lab} of {parent.pl} with {kids} in {y1} and no {child.pl} {verb or ''} in {y2}.",
            ]
        lab = _label_zh(parent, r)
        if both:
            return [
                f"{y1}年和{y2}年都有{vz}的{child.zh}的{parent.zh}有哪些?给出{lab}。"
                if vz
                else f"{y1}年和{y2}年都有{child.zh}的{parent.zh}有哪些?给出{lab}。",
                f"列出在{y1}年和{y2}年均有{child.zh}{vz}的{parent.zh}的{lab}。",
            ]
        return [
            f"哪些{parent.zh}在{y1}年有{child.zh}{vz},但{y2}年没有?给出{lab}。",
            f"列出{y1}年有{child.zh}{vz}而{y2}年没有的{parent.zh}的{lab}。",
        ]

    return say


def _fam_nested_count(g: _Gen) -> Iterator[_Cand]:
    for link in g.s.links:
        child = link.child
        fk_counts = sorted(link.fk.counts.values()) if link.fk.counts else []
        if not fk_counts:
            continue
        scale = child.rows / max(child.sampled, 1)
        rng = g.rng("nested_count", child.name, link.fk.name)
        where = f" WHERE {link.fk.sql} IS NOT NULL" if link.fk.nulls else ""
        n = max(1, int(nice_number(fk_counts[int(len(fk_counts) * 0.6)] * scale, True)))
        sql = (
            f"SELECT COUNT(*) FROM (SELECT {link.fk.sql} FROM {child.sql}{where} GROUP BY {link.fk.sql} "
            f"HAVING COUNT(*) > {n}){g.derived()}"
        )
        yield _Cand("nested_count", sql, _nested_count_say(link, n), "count", child.name)
        if rng.random() < 0.6:
            sql = (
                f"SELECT AVG(n) FROM (SELECT COUNT(*) AS n FROM {child.sql}{where} GROUP BY {link.fk.sql}){g.derived()}"
            )
            yield _Cand("nested_count", sql, _per_parent_avg_say(link), "scalar", child.name)
        for c in child.categories[:2]:  # "customers with more than 5 delivered orders"
            for v in _values(g, c, f"nested_count|{link.fk.name}", 1):
                per = Counter(
                    row.get(link.fk.name)
                    for row in child.sample
                    if row.get(c.name) == v and row.get(link.fk.name) is not None
                )
                if len(per) < 3:
                    continue
                counts = sorted(per.values())
                n = max(1, int(nice_number(counts[len(counts) // 2] * scale, True)))
                cond = eq_cond(g, child, c, v)
                sql = (
                    f"SELECT COUNT(*) FROM (SELECT {link.fk.sql} FROM {child.sql} WHERE {cond.sql} "
                    f"GROUP BY {link.fk.sql} HAVING COUNT(*) > {n}){g.derived()}"
                )
                yield _Cand("nested_count", sql, _nested_count_say(link, n, cond), "count", child.name)


def _nested_count_say(link: Link, n: int, cond: Cond | None = None) -> Say:
    child, rs = link.child, plural_phrase(link.role)

    def say(lang: str, r: random.Random) -> list[str]:
        if cond is not None:
            if lang == "en":
                m = _pick(r, cond.mod_sg if n == 1 else cond.mod)
                kids = f"{_n_of(n, child.sg, child.pl)} {m}"
                out = [f"How many {rs} have more than {kids}?", f"Count the {rs} with over {kids}."]
                if cond.pre:
                    p = _pick(r, cond.pre)
                    out += [f"How many {rs} have more than {_n_of(n, f'{p} {child.sg}', f'{p} {child.pl}')}?"]
                return out
            z = _pick(r, cond.zh)
            return [
                f"有多少{link.role_zh}的{z}的{child.zh}超过{n}个?",
                f"{z}的{child.zh}多于{n}个的{link.role_zh}有多少?",
            ]
        if lang == "en":
            more = _pick(r, ["more than", "over"])
            return [
                f"How many {rs} have {more} {_n_of(n, child.sg, child.pl)}?",
                f"Count the {rs} with {more} {_n_of(n, child.sg, child.pl)}.",
                f"What is the number of {rs} that have more than {_n_of(n, child.sg, child.pl)}?",
            ]
        rz = link.role_zh
        return [
            f"有多少{rz}的{child.zh}超过{n}个?",
            f"{child.zh}多于{n}个的{rz}有多少?",
            f"统计{child.zh}数量超过{n}的{rz}个数。",
        ]

    return say


def _per_parent_avg_say(link: Link) -> Say:
    child = link.child

    def say(lang: str, r: random.Random) -> list[str]:
        if lang == "en":
            return [
                f"What is the average number of {child.pl} per {link.role}?",
                f"On average, how many {child.pl} does each {link.role} have?",
                f"How many {child.pl} does {article(link.role)} {link.role} have on average?",
            ]
        return [f"平均每个{link.role_zh}有多少{child.zh}?", f"每个{link.role_zh}平均有多少个{child.zh}?"]

    return say


# --- flags, combined filters, percentages, text, NULLs -------------------------------------------------


def _fam_flag(g: _Gen) -> Iterator[_Cand]:
    for t in g.s.tables:
        for c in t.of_kind("flag"):
            ones = sum(1 for v in c.counts.elements() if v in (1, True))
            share = ones / max(sum(c.counts.values()), 1)
            cond = flag_cond(g, c, True)
            if t.label and share * t.rows <= LIST_MAX * 0.75:
                yield _list_where("flag", t, cond)
            yield _count_where("flag", t, cond)
            if g.rng("flag", t.name, c.name).random() < 0.5:
                yield _count_where("flag", t, flag_cond(g, c, False))


def _and_cond(a: Cond, b: Cond) -> Cond:
    wa = [w for w in a.with_] or []
    wb = [w for w in b.with_] or []
    whose_a = [m for m in a.mod if m.startswith("whose ")]
    whose_b = [m for m in b.mod if m.startswith("whose ")]
    out = Cond(f"{a.sql} AND {b.sql}")
    out.with_ = [f"{x} and {y}" for x in wa for y in wb]
    out.mod = [f"{x} and {y}" for x in whose_a for y in whose_b]
    out.mod += [f"{x} and {y}" for x in a.mod if not x.startswith(("whose", "with")) for y in whose_b]
    out.pre = [f"{p} {m}" for p in a.pre for m in b.mod if m.startswith(("whose", "with"))]
    out.mod_sg = list(out.mod)
    out.zh = [f"{x}且{y}" for x in a.zh for y in b.zh]
    out.zh_pred = [f"{x}且{y.removeprefix('的')}" for x in a.zh_pred for y in b.zh_pred]
    out.both()
    return out


Row = dict[str, Any]


def _equals(col: Col, value: Any) -> Callable[[Row], bool]:
    return lambda row: row.get(col.name) == value


def _compares(col: Col, op: str, x: float) -> Callable[[Row], bool]:
    def check(row: Row) -> bool:
        v = row.get(col.name)
        return isinstance(v, int | float) and (v > x if op == ">" else v < x)

    return check


def _fam_and_filter(g: _Gen) -> Iterator[_Cand]:
    """Two conditions together; the sampled rows tell whether a list of matches stays short."""
    for t in g.s.tables:
        rng = g.rng("and_filter", t.name)
        firsts = [(eq_cond(g, t, c, v), c, _equals(c, v)) for c in t.categories for v in _values(g, c, "and_filter", 1)]
        seconds = [
            (eq_cond(g, t, c, v), c, _equals(c, v)) for c in t.categories for v in _values(g, c, "and_filter_2", 1)
        ]
        for c in _measures(t):
            x = _threshold(c, 0.5)
            if x is not None:
                op = rng.choice([">", "<"])
                seconds.append((number_cond(g, c, op, x), c, _compares(c, op, x)))
        for c in t.of_kind("flag"):
            seconds.append((flag_cond(g, c), c, _equals(c, 1)))
        for a, a_col, a_holds in firsts:
            options = [(b, b_holds) for b, b_col, b_holds in seconds if b_col is not a_col]
            if not options or not t.sample:
                continue
            b, b_holds = rng.choice(options)
            cond = _and_cond(a, b)
            hits = sum(1 for row in t.sample if a_holds(row) and b_holds(row))
            if not cond.mod or not hits:
                continue
            if _named(t) and hits / len(t.sample) * t.rows <= LIST_MAX * 0.5 and rng.random() < 0.5:
                yield _list_where("and_filter", t, cond)
            else:
                yield _count_where("and_filter", t, cond)


def _fam_ratio(g: _Gen) -> Iterator[_Cand]:
    for t in g.s.tables:
        conds = [eq_cond(g, t, c, v) for c in t.categories for v in _values(g, c, "ratio", 1)]
        conds += [flag_cond(g, c) for c in t.of_kind("flag")]
        for cond in conds:
            sql = f"SELECT 100.0 * SUM(CASE WHEN {cond.sql} THEN 1 ELSE 0 END) / COUNT(*) FROM {t.sql}"

            def say(lang: str, r: random.Random, t: Tab = t, cond: Cond = cond) -> list[str]:
                if lang == "en":
                    out = [
                        f"What percentage of {t.pl} {_pick(r, cond.pred)}?",
                        f"What is the percentage of {t.pl} {_pick(r, cond.mod)}?",
                        f"What share of all {t.pl} {_pick(r, cond.pred)}, as a percentage?",
                        f"What percent of the {t.pl} {_pick(r, cond.pred)}?",
                    ]
                    if cond.pre:
                        out += [f"What percentage of all {t.pl} are {_pick(r, cond.pre)}?"]
                    return out
                z = _pick(r, cond.zh)
                return [
                    f"{z}的{t.zh}占全部{t.zh}的百分比是多少?",
                    f"{z}的{t.zh}占所有{t.zh}的比例是多少(百分比)?",
                    f"在所有{t.zh}中,{z}的占百分之多少?",
                ]

            yield _Cand("ratio", sql, say, "scalar", t.name)


def _fam_text_match(g: _Gen) -> Iterator[_Cand]:
    for t in g.s.tables:
        if not _named(t) or len(t.label) != 1:
            continue
        c = t.label[0]
        values = [v for v in c.values if isinstance(v, str)]
        if len(values) < 4:
            continue
        words = Counter(w for v in values for w in set(re.findall(r"[A-Za-z]{3,}", v)) if w.lower() not in _STOPWORDS)
        rng = g.rng("text_match", t.name)
        options = []
        for w, n in words.items():
            if not 1 <= n < len(values) or n * t.rows / len(values) > LIST_MAX:
                continue
            sensitive = {v for v in values if w in v}
            insensitive = {v for v in values if w.lower() in v.lower()}
            if sensitive == insensitive:
                options.append(w)
        for w in rng.sample(sorted(options), min(2, len(options))):
            sql = f"SELECT {c.sql} FROM {t.sql} WHERE {c.sql} LIKE '%{w}%'"

            def say(lang: str, r: random.Random, t: Tab = t, c: Col = c, w: str = w) -> list[str]:
                if lang == "en":
                    n = _cname(c, r)
                    return [
                        f"Which {t.pl} have '{w}' in their {n}?",
                        f"List the {t.pl} whose {n} contains '{w}'.",
                        f"Find all {t.pl} with the word {w} in the {n}.",
                        f'Show the {plural_phrase(n)} of {t.pl} containing "{w}".',
                    ]
                return [
                    f"{c.zh}中包含“{w}”的{t.zh}有哪些?",
                    f"哪些{t.zh}的{c.zh}里有{w}?",
                    f"列出{c.zh}含有{w}的{t.zh}。",
                ]

            yield _Cand("text_match", sql, say, "list", t.name)


def _fam_null_check(g: _Gen) -> Iterator[_Cand]:
    roles = {(lk.child.name, lk.fk.name): lk for lk in g.s.links}
    for t in g.s.tables:
        for c in t.cols:
            present = sum(c.counts.values())
            if not c.nulls or (c.kind != "key" and not present):
                continue
            link = roles.get((t.name, c.name))
            if c.kind == "key" and link is None:
                continue
            cond = null_cond(c, link.role if link else None)
            if link:
                cond.zh = [f"没有{link.role_zh}"]
                cond.zh_pred = [f"没有{link.role_zh}"]
            if _named(t) and c.nulls <= LIST_MAX * 0.5:
                yield _list_where("null_check", t, cond)
            yield _count_where("null_check", t, cond)


FAMILIES: dict[str, Callable[[_Gen], Iterator[_Cand]]] = {
    "count_all": _fam_count_all,
    "count_filter": _fam_count_filter,
    "list_filter": _fam_list_filter,
    "list_all": _fam_list_all,
    "distinct": _fam_distinct,
    "numeric_filter": _fam_numeric_filter,
    "aggregate": _fam_aggregate,
    "aggregate_filter": _fam_aggregate_filter,
    "group_count": _fam_group_count,
    "group_agg": _fam_group_agg,
    "group_top": _fam_group_top,
    "having": _fam_having,
    "top_k": _fam_top_k,
    "join_filter": _fam_join_filter,
    "join_group": _fam_join_group,
    "join_top": _fam_join_top,
    "join2": _fam_join2,
    "self_join": _fam_self_join,
    "date_year": _fam_date_year,
    "date_group": _fam_date_group,
    "date_compare": _fam_date_compare,
    "arithmetic": _fam_arithmetic,
    "not_in": _fam_not_in,
    "above_average": _fam_above_average,
    "in_subquery": _fam_in_subquery,
    "in_both_years": _fam_in_both_years,
    "nested_count": _fam_nested_count,
    "flag": _fam_flag,
    "and_filter": _fam_and_filter,
    "ratio": _fam_ratio,
    "text_match": _fam_text_match,
    "null_check": _fam_null_check,
}


# =====================================================================================================
# Generation
# =====================================================================================================


def normalise_question(text: str) -> str:
    """NFKC, case-folded, without whitespace and punctuation: how questions compare for duplicates and leaks."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return "".join(ch for ch in folded if not ch.isspace() and not unicodedata.category(ch).startswith("P"))


def normalise_sql(sql: str) -> str:
    return " ".join(sql.strip().rstrip(";").split()).casefold()


def _has_limit(sql: str) -> bool:
    return bool(re.search(r"\bLIMIT\s+\d+\s*$", sql))


def _meaningful(res: QueryResult, cand: _Cand) -> bool:
    """Whether a result is worth a question: rows, not all NULL, a short list, no NULL aggregate."""
    rows = res.rows
    if not rows or (res.truncated and not _has_limit(cand.sql)):
        return False
    if all(v is None for r in rows for v in r):
        return False
    if cand.expect in ("count", "scalar"):
        if len(rows) != 1 or any(v is None for v in rows[0]):
            return False
        if cand.expect == "count" and not (isinstance(rows[0][0], int | float) and rows[0][0] > 0):
            return False
    if len(rows) < cand.min_rows or (len(rows) > cand.max_rows and not _has_limit(cand.sql)):
        return False
    if cand.expect == "groups" and any(v is None for r in rows for v in r):
        return False
    if cand.expect == "list" and sum(1 for r in rows if all(v is None for v in r)) > len(rows) / 2:
        return False
    if cand.distinct_col is not None:
        keys = [r[cand.distinct_col] for r in rows]
        if len(set(keys)) != len(keys):
            return False  # an ORDER BY on tied values: the expected order is not well defined
    return True


_BAD_TEXT = re.compile(r"  | [?.,]|的的|\{|\}|^\s|\s$|\bNone\b")


def _sentences(cand: _Cand, lang: str, rng: random.Random) -> list[str]:
    out = []
    for s in cand.say(lang, rng):
        s = " ".join(s.split(" ")).strip()
        if not s or _BAD_TEXT.search(s):
            continue
        if lang == "en":
            s = s[0].upper() + s[1:]
        else:
            s = _zh_punct(s, rng)
        if s not in out:
            out.append(s)
    return out


def _interleave(cands: list[_Cand], rng: random.Random) -> list[_Cand]:
    """Candidates shuffled within each table, then taken a table at a time (no table dominates)."""
    buckets: dict[str, list[_Cand]] = {}
    for c in cands:
        buckets.setdefault(c.bucket, []).append(c)
    lists = []
    for key in sorted(buckets):
        items = buckets[key]
        rng.shuffle(items)
        lists.append(items)
    rng.shuffle(lists)
    out: list[_Cand] = []
    while any(lists):
        for items in lists:
            if items:
                out.append(items.pop(0))
    return out


async def generate_pairs(
    connector: Connector,
    db_id: str,
    *,
    seed: int = 0,
    max_pairs: int = 2000,
    phrasings: int = 3,
    languages: Sequence[str] = LANGUAGES,
    timeout_s: float = 5.0,
    progress: Callable[[int, int], None] | None = None,
    guess_joins: bool = False,
) -> list[Pair]:
    """Question -> SQL pairs over ``connector``'s own schema and values (see the module docstring).

    ``phrasings`` questions per query and language; families take turns so none dominates; at most
    ``max_pairs`` pairs. ``progress(pairs_so_far, max_pairs)`` is called as pairs are added. The same
    database and seed give the same pairs. Joins follow the schema's foreign keys; ``guess_joins`` also
    joins along keys guessed from column names when the schema declares none (``infer_keys``). Raises
    ``InvalidRequestError`` for an empty schema or a database no template yields a pair for.
    """
    languages = [lang for lang in languages if lang in LANGUAGES]
    if not languages:
        raise InvalidRequestError(f"languages must include one of {', '.join(LANGUAGES)}", param="languages")
    if phrasings < 1 or max_pairs < 1:
        raise InvalidRequestError("phrasings and max_pairs must be at least 1")
    schema = [t for t in await connector.schema() if t.columns]
    if not schema:
        raise InvalidRequestError(
            f"data source {db_id!r} has no tables: load some data (or point it at a database with tables) "
            "before generating training pairs",
            param="db_id",
        )
    profiled = await _profile(connector, schema, timeout_s, guess_joins)
    g = _Gen(profiled, seed)
    order = random.Random(f"{seed}|families")
    queues: list[tuple[str, list[_Cand]]] = []
    for name, family in FAMILIES.items():
        cands = list(family(g))
        if cands:
            queues.append((name, _interleave(cands, random.Random(f"{seed}|{name}"))))
    order.shuffle(queues)
    pairs: list[Pair] = []
    seen_sql: set[str] = set()
    seen_q: set[str] = set()
    active = queues
    while active and len(pairs) < max_pairs:
        still: list[tuple[str, list[_Cand]]] = []
        for name, queue in active:
            if len(pairs) >= max_pairs:
                break
            added = False
            while queue and not added:
                cand = queue.pop(0)
                key = normalise_sql(cand.sql)
                if key in seen_sql:
                    continue
                seen_sql.add(key)
                if not await _accept(connector, cand, timeout_s):
                    continue
                new = _pairs_for(cand, g, db_id, phrasings, languages, seen_q)
                if new:
                    pairs.extend(new[: max_pairs - len(pairs)])
                    added = True
                    if progress is not None:
                        progress(len(pairs), max_pairs)
            if queue or added:
                still.append((name, queue))
        active = [(n, q) for n, q in still if q]
    if not pairs:
        raise InvalidRequestError(
            f"no training pairs could be written for {db_id!r}: its tables hold no rows that the question "
            "templates can use (they need rows with text, number or date columns); add data and try again",
            param="db_id",
        )
    return pairs


async def _accept(connector: Connector, cand: _Cand, timeout_s: float) -> bool:
    try:
        check_read_only(cand.sql, connector.dialect)
        res = await connector.run(cand.sql, limit=LIST_MAX, timeout_s=timeout_s)
        if not _meaningful(res, cand):
            return False
        if cand.probe is not None:
            probe_sql, check = cand.probe  # the connector checks it is read-only, as every query
            probe = await connector.run(probe_sql, limit=LIST_MAX, timeout_s=timeout_s)
            if probe.truncated or not check(probe.rows):
                return False
    except InvalidRequestError:
        return False
    return True


def _pairs_for(
    cand: _Cand, g: _Gen, db_id: str, phrasings: int, languages: Sequence[str], seen_q: set[str]
) -> list[Pair]:
    difficulty = difficulty_of(g.sqlite_of(cand.sql) or cand.sql)
    sqlite_sql = g.sqlite_of(cand.sql)
    out: list[Pair] = []
    for lang in languages:
        rng = g.rng("say", cand.sql, lang)
        options = _sentences(cand, lang, rng)
        rng.shuffle(options)
        kept = 0
        for q in options:
            key = normalise_question(q)
            if key in seen_q:
                continue
            seen_q.add(key)
            out.append(Pair(q, cand.sql, db_id, lang, cand.family, difficulty, sqlite_sql))
            kept += 1
            if kept >= phrasings:
                break
    return out


# =====================================================================================================
# Splits and leakage
# =====================================================================================================


def _stable(seed: int, text: str) -> str:
    return hashlib.sha256(f"{seed}|{text}".encode()).hexdigest()


def split_pairs(pairs: list[Pair], dev_share: float = 0.1, seed: int = 0) -> tuple[list[Pair], list[Pair]]:
    """(train, dev), split by query: every phrasing of one query lands on the same side. Queries are
    spread over the families (each family gives its share to dev), deterministically for ``seed``."""
    if not 0 <= dev_share < 1:
        raise InvalidRequestError("dev_share must be at least 0 and below 1", param="dev_share")
    by_sql: dict[str, list[Pair]] = {}
    for p in pairs:
        by_sql.setdefault(normalise_sql(p.query), []).append(p)
    families: dict[str, list[str]] = {}
    for key, group in by_sql.items():
        families.setdefault(group[0].template, []).append(key)
    lists = [sorted(keys, key=lambda k: _stable(seed, k)) for _, keys in sorted(families.items())]
    lists.sort(key=lambda keys: _stable(seed, keys[0]))
    interleaved: list[str] = []
    while any(lists):
        for keys in lists:
            if keys:
                interleaved.append(keys.pop(0))
    target = round(dev_share * len(interleaved))
    if dev_share > 0 and target == 0 and len(interleaved) >= 2:
        target = 1
    dev_keys = set(interleaved[:target])
    train = [p for p in pairs if normalise_sql(p.query) not in dev_keys]
    dev = [p for p in pairs if normalise_sql(p.query) in dev_keys]
    return train, dev


def leaked(pairs: list[Pair], eval_questions: Iterable[str], eval_queries: Iterable[str] = ()) -> list[Pair]:
    """The pairs whose normalised question equals an evaluation question, or whose SQL (whitespace and case
    normalised) equals an evaluation gold query."""
    questions = {normalise_question(q) for q in eval_questions}
    queries = {normalise_sql(q) for q in eval_queries}
    return [
        p
        for p in pairs
        if normalise_question(p.question) in questions
        or normalise_sql(p.query) in queries
        or (p.sqlite_query and normalise_sql(p.sqlite_query) in queries)
    ]


def check_no_leakage(pairs: list[Pair], eval_questions: Iterable[str], eval_queries: Iterable[str] = ()) -> list[Pair]:
    """``pairs`` without those ``leaked`` finds; ``len(pairs) - len(result)`` is how many were dropped."""
    questions = list(eval_questions)
    queries = list(eval_queries)
    bad = {id(p) for p in leaked(pairs, questions, queries)}
    return [p for p in pairs if id(p) not in bad]


# =====================================================================================================
# Spider files
# =====================================================================================================


def _natural(name: str) -> str:
    return " ".join(expand(split_words(name))) or name


def tables_json_entry(db_id: str, schema: list[TableInfo], *, guess_joins: bool = False) -> dict[str, Any]:
    """One database in Spider's ``tables.json`` format. Keys are the schema's own; primary keys (and with
    ``guess_joins`` foreign keys) are guessed from names when it declares none, as the generator does."""
    schema = infer_keys(schema, joins=guess_joins)
    columns_original: list[list[Any]] = [[-1, "*"]]
    columns: list[list[Any]] = [[-1, "*"]]
    types = ["text"]
    index: dict[tuple[str, str], int] = {}
    primary: list[int] = []
    for ti, t in enumerate(schema):
        for c in t.columns:
            index[(t.name, c.name)] = len(columns_original)
            if c.primary_key:
                primary.append(len(columns_original))
            columns_original.append([ti, c.name])
            columns.append([ti, _natural(c.name)])
            types.append(_type_kind(c.type))
    foreign: list[list[int]] = []
    for t in schema:
        for fk in t.foreign_keys:
            for a, b in zip(fk.columns, fk.ref_columns, strict=False):
                if (t.name, a) in index and (fk.ref_table, b) in index:
                    foreign.append([index[(t.name, a)], index[(fk.ref_table, b)]])
    return {
        "db_id": db_id,
        "table_names_original": [t.name for t in schema],
        "table_names": [_natural(t.name) for t in schema],
        "column_names_original": columns_original,
        "column_names": columns,
        "column_types": types,
        "primary_keys": primary,
        "foreign_keys": foreign,
    }


def _spider_item(p: Pair) -> dict[str, Any]:
    item = p.to_dict()
    if p.sqlite_query:
        item["query"] = p.sqlite_query
        item["source_query"] = p.query
    return item


def write_spider(
    folder: Path,
    db_id: str,
    train: list[Pair],
    dev: list[Pair],
    schema: list[TableInfo],
    sqlite_path: Path | None,
    *,
    guess_joins: bool = False,
) -> dict[str, Path]:
    """Spider's layout under ``folder``: ``train.json``, ``dev.json``, ``gold.txt`` (dev's "SQL<TAB>db_id"
    lines), ``tables.json`` and ``database/<db_id>/<db_id>.sqlite`` (a consistent copy of ``sqlite_path``;
    for a source that is not SQLite, pass the file ``export_sqlite`` wrote, or ``None`` for no database).
    Queries are written in SQLite's dialect (a non-SQLite source's own query is kept as ``source_query``).
    ``guess_joins`` as given to ``generate_pairs`` (foreign keys guessed from names in ``tables.json``).
    Returns the paths written, by name."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for name, items in (("train", train), ("dev", dev)):
        path = folder / f"{name}.json"
        path.write_text(json.dumps([_spider_item(p) for p in items], ensure_ascii=False, indent=1) + "\n", "utf-8")
        out[name] = path
    gold = folder / "gold.txt"
    gold.write_text("".join(f"{' '.join((p.sqlite_query or p.query).split())}\t{p.db_id}\n" for p in dev), "utf-8")
    out["gold"] = gold
    tables = folder / "tables.json"
    entry = tables_json_entry(db_id, schema, guess_joins=guess_joins)
    tables.write_text(json.dumps([entry], ensure_ascii=False, indent=1) + "\n", "utf-8")
    out["tables"] = tables
    if sqlite_path is not None:
        target = folder / "database" / db_id / f"{db_id}.sqlite"
        target.parent.mkdir(parents=True, exist_ok=True)
        if Path(sqlite_path).resolve() != target.resolve():
            _copy_sqlite(Path(sqlite_path), target)
        out["database"] = target
    return out


def _copy_sqlite(source: Path, target: Path) -> None:
    if not source.is_file():
        raise InvalidRequestError(f"SQLite file not found: {source}", param="sqlite_path")
    tmp = target.with_suffix(".sqlite.tmp")
    tmp.unlink(missing_ok=True)
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(tmp)
        try:
            src.backup(dst)
        finally:
            dst.close()
    except sqlite3.Error as exc:
        tmp.unlink(missing_ok=True)
        raise InvalidRequestError(f"could not copy {source}: {exc}", param="sqlite_path") from None
    finally:
        src.close()
    tmp.replace(target)


def _sqlite_type(type_name: str) -> str:
    kind = _type_kind(type_name)
    t = type_name.upper()
    if kind == "number":
        return "INTEGER" if "INT" in t else "REAL"
    if kind == "boolean":
        return "INTEGER"
    return "TEXT"


async def export_sqlite(
    connector: Connector,
    path: Path,
    *,
    schema: list[TableInfo] | None = None,
    rows_per_table: int = EXPORT_ROWS,
    timeout_s: float = 30.0,
    guess_joins: bool = False,
) -> Path:
    """A SQLite copy of a source's schema (keys included, or guessed from names when it declares none)
    and of at most ``rows_per_table`` rows per table, read through the connector; for Spider's layout
    when the source is not SQLite. Dates become ISO text and booleans 0/1."""
    schema = infer_keys(schema if schema is not None else await connector.schema(), joins=guess_joins)
    with writing_database(path, 0) as con:
        for t in schema:
            if not t.columns:
                continue
            pk = [c.name for c in t.columns if c.primary_key]
            lines = [f"  {quote_ident(c.name, 'sqlite')} {_sqlite_type(c.type)}" for c in t.columns]
            if pk:
                lines.append(f"  PRIMARY KEY ({', '.join(quote_ident(n, 'sqlite') for n in pk)})")
            for fk in t.foreign_keys:
                cols = ", ".join(quote_ident(n, "sqlite") for n in fk.columns)
                refs = ", ".join(quote_ident(n, "sqlite") for n in fk.ref_columns)
                lines.append(f"  FOREIGN KEY ({cols}) REFERENCES {quote_ident(fk.ref_table, 'sqlite')}({refs})")
            table = quote_ident(t.name, "sqlite")
            con.execute(f"CREATE TABLE {table} (\n" + ",\n".join(lines) + "\n)")
            names = ", ".join(quote_ident(c.name, connector.dialect) for c in t.columns)
            res = await connector.run(
                f"SELECT {names} FROM {quote_ident(t.name, connector.dialect)}",
                limit=rows_per_table,
                timeout_s=timeout_s,
            )
            marks = ", ".join("?" for _ in t.columns)
            con.executemany(
                f"INSERT INTO {table} VALUES ({marks})",
                [tuple(_sqlite_value(v) for v in row) for row in res.rows],
            )
    return Path(path)


def _sqlite_value(v: Any) -> Any:
    if isinstance(v, bool):
        return int(v)
    return jsonable(v)


def sqlite_source_path(connector: Connector) -> Path | None:
    """The file behind a SQLite connector (``SQLAlchemyConnector`` over SQLite), else ``None``."""
    url = getattr(connector, "url", None)
    if connector.dialect != "sqlite" or url is None:
        return None
    database = str(getattr(url, "database", "") or "")
    if database.startswith("file:"):
        database = unquote(database[5:].split("?", 1)[0])
    path = Path(database)
    return path if path.is_file() else None
