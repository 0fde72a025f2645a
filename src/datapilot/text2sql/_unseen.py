"""The unseen evaluation set's database: a small university, built deterministically.

Fine-tuning on question -> SQL pairs generated from a schema must be shown to help on a database the
project has never seen, in a domain neither the sample business nor the clinic covers, on questions
written by hand. This is that database: ten related tables (departments, instructors, classrooms,
terms, courses, sections, students, enrollments, scholarships, scholarship_awards) with keys, five
terms of grades and one in progress, students' hometowns in Chinese and every course's Chinese title.
Nothing in the project is tuned on it, and no training pairs are generated from it. The same seed
always gives the same rows, so the set's gold answers stay valid. ``ensure_unseen_database(DIR)``
builds ``DIR/university/university.sqlite`` (Spider's layout) when missing or outdated;
``datapilot eval text2sql --set unseen`` does so under ``HOME/eval``.
"""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Any

from datapilot.datasource import ensure_database, random_day, writing_database

UNSEEN_DB_ID = "university"
UNSEEN_VERSION = 1
SEED = 20250611
TODAY = dt.date(2025, 3, 10)  # the data's "today": the Spring 2025 term is under way, ungraded

SCHEMA = """
CREATE TABLE departments (
  department_id INTEGER PRIMARY KEY,
  code TEXT NOT NULL,            -- short code used in course codes, e.g. CS
  name TEXT NOT NULL,
  building TEXT NOT NULL,        -- where the department's offices are
  founded_on TEXT NOT NULL,      -- YYYY-MM-DD
  annual_budget REAL NOT NULL    -- CNY per year
);
CREATE TABLE instructors (
  instructor_id INTEGER PRIMARY KEY,
  first_name TEXT NOT NULL,
  last_name TEXT NOT NULL,
  academic_rank TEXT NOT NULL,   -- Lecturer, Assistant Professor, Associate Professor or Professor
  department_id INTEGER NOT NULL REFERENCES departments(department_id),
  hire_date TEXT NOT NULL,       -- YYYY-MM-DD
  salary REAL NOT NULL           -- CNY per year
);
CREATE TABLE classrooms (
  classroom_id INTEGER PRIMARY KEY,
  building TEXT NOT NULL,
  room_number TEXT NOT NULL,
  capacity INTEGER NOT NULL,     -- seats
  room_type TEXT NOT NULL        -- lecture hall, seminar room or lab
);
CREATE TABLE terms (
  term_id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,            -- e.g. Fall 2023
  start_date TEXT NOT NULL,      -- YYYY-MM-DD
  end_date TEXT NOT NULL         -- YYYY-MM-DD
);
CREATE TABLE courses (
  course_id INTEGER PRIMARY KEY,
  code TEXT NOT NULL,            -- e.g. CS310
  title TEXT NOT NULL,           -- English title
  title_zh TEXT NOT NULL,        -- Chinese title
  department_id INTEGER NOT NULL REFERENCES departments(department_id),
  credits INTEGER NOT NULL,
  level INTEGER NOT NULL         -- 100, 200, 300 or 400
);
CREATE TABLE sections (
  section_id INTEGER PRIMARY KEY,
  course_id INTEGER NOT NULL REFERENCES courses(course_id),
  term_id INTEGER NOT NULL REFERENCES terms(term_id),
  instructor_id INTEGER NOT NULL REFERENCES instructors(instructor_id),
  classroom_id INTEGER NOT NULL REFERENCES classrooms(classroom_id),
  meeting_days TEXT NOT NULL,    -- Mon/Wed, Tue/Thu or Fri
  start_time TEXT NOT NULL,      -- HH:MM
  max_enrollment INTEGER NOT NULL
);
CREATE TABLE students (
  student_id INTEGER PRIMARY KEY,
  first_name TEXT NOT NULL,
  last_name TEXT NOT NULL,
  gender TEXT NOT NULL,          -- F or M
  birth_date TEXT NOT NULL,      -- YYYY-MM-DD
  hometown TEXT NOT NULL,        -- city, in Chinese
  major_department_id INTEGER NOT NULL REFERENCES departments(department_id),
  advisor_id INTEGER NOT NULL REFERENCES instructors(instructor_id),
  admitted_on TEXT NOT NULL,     -- YYYY-MM-DD
  status TEXT NOT NULL           -- active, on_leave or graduated
);
CREATE TABLE enrollments (
  enrollment_id INTEGER PRIMARY KEY,
  student_id INTEGER NOT NULL REFERENCES students(student_id),
  section_id INTEGER NOT NULL REFERENCES sections(section_id),
  enrolled_on TEXT NOT NULL,     -- YYYY-MM-DD
  status TEXT NOT NULL,          -- completed, withdrawn or in_progress
  grade TEXT,                    -- letter grade A .. F; NULL unless completed
  grade_points REAL              -- 4.0 for A .. 0.0 for F; NULL unless completed
);
CREATE TABLE scholarships (
  scholarship_id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  sponsor TEXT NOT NULL,
  kind TEXT NOT NULL,            -- merit, need-based or service
  amount REAL NOT NULL           -- CNY per award
);
CREATE TABLE scholarship_awards (
  award_id INTEGER PRIMARY KEY,
  scholarship_id INTEGER NOT NULL REFERENCES scholarships(scholarship_id),
  student_id INTEGER NOT NULL REFERENCES students(student_id),
  awarded_on TEXT NOT NULL       -- YYYY-MM-DD
);
"""

# id, code, name, building, founded_on, annual_budget
DEPARTMENTS = [
    (1, "CS", "Computer Science", "Turing Hall", "1984-09-01", 12_500_000.0),
    (2, "MATH", "Mathematics", "Euler Building", "1952-09-01", 6_800_000.0),
    (3, "PHYS", "Physics", "Curie Hall", "1952-09-01", 9_200_000.0),
    (4, "CHEM", "Chemistry", "Curie Hall", "1958-03-01", 8_100_000.0),
    (5, "ECON", "Economics", "Smith Hall", "1979-09-01", 7_400_000.0),
    (6, "HIST", "History", "Heritage Hall", "1952-09-01", 3_900_000.0),
    (7, "ENGL", "English Literature", "Heritage Hall", "1963-09-01", 3_200_000.0),
    (8, "ME", "Mechanical Engineering", "Watt Building", "1999-09-01", 10_600_000.0),
]
# department -> (code number, English title, Chinese title, credits)
COURSES = {
    1: [(101, "Introduction to Programming", "程序设计导论", 4), (201, "Data Structures", "数据结构", 4),
        (220, "Computer Organization", "计算机组成原理", 3), (310, "Database Systems", "数据库系统", 3),
        (330, "Operating Systems", "操作系统", 4), (350, "Computer Networks", "计算机网络", 3),
        (420, "Machine Learning", "机器学习", 3), (499, "Quantum Computing", "量子计算", 2)],
    2: [(101, "Calculus I", "微积分一", 4), (102, "Calculus II", "微积分二", 4), (210, "Linear Algebra", "线性代数", 3),
        (230, "Probability and Statistics", "概率论与数理统计", 3), (320, "Discrete Mathematics", "离散数学", 3),
        (410, "Real Analysis", "实分析", 3)],
    3: [(101, "General Physics I", "大学物理一", 4), (102, "General Physics II", "大学物理二", 4),
        (250, "Electromagnetism", "电磁学", 3), (310, "Quantum Mechanics", "量子力学", 3),
        (320, "Thermodynamics", "热力学", 3)],
    4: [(101, "General Chemistry", "普通化学", 4), (210, "Organic Chemistry", "有机化学", 4),
        (220, "Analytical Chemistry", "分析化学", 3), (330, "Physical Chemistry", "物理化学", 3)],
    5: [(101, "Principles of Microeconomics", "微观经济学原理", 3),
        (102, "Principles of Macroeconomics", "宏观经济学原理", 3), (240, "Econometrics", "计量经济学", 3),
        (310, "Corporate Finance", "公司金融", 3), (350, "Game Theory", "博弈论", 2)],
    6: [(101, "World History", "世界通史", 3), (120, "Modern Chinese History", "中国近现代史纲要", 2),
        (230, "History of Science", "科学史", 2), (310, "The Silk Road", "丝绸之路史", 3)],
    7: [(101, "Academic Writing", "学术写作", 2), (150, "Survey of English Literature", "英国文学概论", 3),
        (240, "Shakespeare", "莎士比亚研究", 3), (330, "Creative Writing", "创意写作", 2)],
    8: [(101, "Engineering Drawing", "工程制图", 3), (210, "Statics", "静力学", 3),
        (220, "Materials Science", "材料科学基础", 3), (310, "Fluid Mechanics", "流体力学", 4),
        (330, "Heat Transfer", "传热学", 3)],
}  # fmt: skip
NEVER_OFFERED = {"CS499"}  # approved, not yet taught
# Courses every student takes in the first year, whatever the major.
COMMON_CORE = {"MATH101", "ENGL101", "HIST120"}
# id, building, room_number, capacity, room_type
CLASSROOMS = [
    (1, "Turing Hall", "T101", 180, "lecture hall"),
    (2, "Turing Hall", "T205", 60, "lab"),
    (3, "Turing Hall", "T310", 40, "seminar room"),
    (4, "Euler Building", "E100", 220, "lecture hall"),
    (5, "Euler Building", "E214", 45, "seminar room"),
    (6, "Curie Hall", "C120", 150, "lecture hall"),
    (7, "Curie Hall", "C240", 36, "lab"),
    (8, "Curie Hall", "C245", 36, "lab"),
    (9, "Smith Hall", "S101", 160, "lecture hall"),
    (10, "Smith Hall", "S330", 40, "seminar room"),
    (11, "Heritage Hall", "H110", 120, "lecture hall"),
    (12, "Heritage Hall", "H202", 30, "seminar room"),
    (13, "Heritage Hall", "H204", 30, "seminar room"),
    (14, "Watt Building", "W150", 140, "lecture hall"),
    (15, "Watt Building", "W260", 48, "lab"),
    (16, "Watt Building", "W402", 24, "seminar room"),  # reserved for thesis defences: no sections
]
UNUSED_ROOMS = {16}
# id, name, start_date, end_date
TERMS = [
    (1, "Fall 2022", "2022-09-05", "2023-01-13"),
    (2, "Spring 2023", "2023-02-20", "2023-06-30"),
    (3, "Fall 2023", "2023-09-04", "2024-01-12"),
    (4, "Spring 2024", "2024-02-26", "2024-07-05"),
    (5, "Fall 2024", "2024-09-02", "2025-01-10"),
    (6, "Spring 2025", "2025-02-17", "2025-06-27"),
]
# id, name, sponsor, kind, amount
SCHOLARSHIPS = [
    (1, "Dean's Merit Scholarship", "University Foundation", "merit", 8000.0),
    (2, "Huaxia Science Fund", "Huaxia Foundation", "merit", 5000.0),
    (3, "Women in Engineering Award", "Northwind Engineering", "merit", 6000.0),
    (4, "First-Generation Grant", "Alumni Association", "need-based", 3000.0),
    (5, "Lighthouse Bursary", "Lighthouse Trust", "need-based", 4000.0),
    (6, "Community Service Award", "Student Union", "service", 2000.0),
    (7, "Silk Road Exchange Scholarship", "Silk Road Institute", "merit", 10000.0),  # new: not yet awarded
]
GRADES = [(3.85, "A", 4.0), (3.5, "A-", 3.7), (3.15, "B+", 3.3), (2.85, "B", 3.0), (2.5, "B-", 2.7),
          (2.15, "C+", 2.3), (1.6, "C", 2.0), (0.8, "D", 1.0)]  # fmt: skip
RANKS = ["Lecturer", "Assistant Professor", "Assistant Professor", "Associate Professor", "Associate Professor",
         "Professor"]  # fmt: skip
SALARY = {"Lecturer": (180, 240), "Assistant Professor": (240, 320), "Associate Professor": (320, 420),
          "Professor": (420, 600)}  # thousands of CNY  # fmt: skip
INSTRUCTOR_FIRST = ["Alice", "Brian", "Catherine", "David", "Elena", "Frank", "Grace", "Henry", "Irene", "Jack",
                    "Karen", "Leo", "Monica", "Noah", "Olivia", "Paul", "Qian", "Rachel", "Samuel", "Tina",
                    "Victor", "Wen", "Xiaoling", "Yang", "Zhen"]  # fmt: skip
INSTRUCTOR_LAST = ["Anderson", "Bai", "Carter", "Deng", "Evans", "Fang", "Green", "Han", "Ivanova", "Jiang",
                   "Kim", "Liang", "Morris", "Nakamura", "Owens", "Peng", "Qiu", "Russo", "Shen", "Tang"]  # fmt: skip
STUDENT_FIRST_F = ["Xiaoyu", "Jiayi", "Yutong", "Siqi", "Mengting", "Ruoxi", "Wanting", "Shuya", "Anna", "Lily",
                   "Chen", "Hanxue", "Yiran", "Zixuan"]  # fmt: skip
STUDENT_FIRST_M = ["Haoran", "Zihan", "Yuxuan", "Junjie", "Tianyu", "Kaiwen", "Boyang", "Zhiyuan", "Ethan",
                   "Oscar", "Minghao", "Jiahao", "Ruize", "Chenxi"]  # fmt: skip
STUDENT_LAST = ["Wang", "Li", "Zhang", "Liu", "Chen", "Yang", "Zhao", "Huang", "Zhou", "Wu", "Xu", "Sun", "Hu",
                "Zhu", "Gao", "Lin", "He", "Guo", "Ma", "Luo", "Smith", "Garcia"]  # fmt: skip
HOMETOWNS = (["北京"] * 5 + ["上海"] * 5 + ["广州"] * 3 + ["深圳"] * 3 + ["成都"] * 4 + ["杭州"] * 4 + ["武汉"] * 3
             + ["西安"] * 3 + ["南京"] * 3 + ["长沙"] * 2 + ["重庆"] * 2 + ["哈尔滨"] + ["厦门"])  # fmt: skip
# share of each department among majors (students per 100)
MAJOR_WEIGHTS = [22, 10, 10, 8, 18, 6, 8, 18]
# October round -> (scholarship, how many) for the need-based and service awards
NEED_AND_SERVICE_AWARDS = {2023: ((4, 10), (5, 7), (6, 9)), 2024: ((4, 8), (5, 9), (6, 12))}
COHORTS = [2020, 2021, 2022, 2023, 2024]  # admission years; the 2020 cohort graduated in June 2024
TIMES = ["08:00", "10:00", "13:30", "15:30", "19:00"]


def _academic_year(term: tuple[Any, ...]) -> int:
    """The calendar year an academic year starts in: Fall 2023 and Spring 2024 are both 2023."""
    start = dt.date.fromisoformat(str(term[2]))
    return start.year if start.month >= 8 else start.year - 1


def build_unseen_database(path: str | Path) -> Path:
    """Write the unseen university database to ``path`` (replacing it) and return the path."""
    rng = random.Random(SEED)
    with writing_database(path, UNSEEN_VERSION) as con:
        con.executescript(SCHEMA)
        con.executemany("INSERT INTO departments VALUES (?, ?, ?, ?, ?, ?)", DEPARTMENTS)
        con.executemany("INSERT INTO classrooms VALUES (?, ?, ?, ?, ?)", CLASSROOMS)
        con.executemany("INSERT INTO terms VALUES (?, ?, ?, ?)", TERMS)
        con.executemany("INSERT INTO scholarships VALUES (?, ?, ?, ?, ?)", SCHOLARSHIPS)
        codes = {d[0]: str(d[1]) for d in DEPARTMENTS}

        instructors: list[tuple[Any, ...]] = []
        used: set[tuple[str, str]] = set()
        for department_id, _, _, _, founded, _ in DEPARTMENTS:
            headcount = 6 if department_id in (1, 5, 8) else 4
            for k in range(headcount):
                while (name := (rng.choice(INSTRUCTOR_FIRST), rng.choice(INSTRUCTOR_LAST))) in used:
                    pass
                used.add(name)
                rank = "Professor" if k == 0 else rng.choice(RANKS)
                earliest = max(dt.date.fromisoformat(str(founded)), dt.date(1995, 1, 1))
                hired = random_day(rng, earliest, dt.date(2021, 12, 31))
                lo, hi = SALARY[rank]
                instructors.append(
                    (len(instructors) + 1, *name, rank, department_id, hired, float(rng.randint(lo, hi) * 1000))
                )
        # Two lecturers hired for the spring: on the roster, teaching nothing yet, advising nobody.
        instructors.append((len(instructors) + 1, "Marta", "Kowalski", "Lecturer", 2, "2025-01-06", 196000.0))
        instructors.append((len(instructors) + 1, "Dong", "Yue", "Lecturer", 6, "2025-02-10", 188000.0))
        con.executemany("INSERT INTO instructors VALUES (?, ?, ?, ?, ?, ?, ?)", instructors)
        teaching = [i for i in instructors if str(i[5]) < "2024-08-01"]

        courses: list[tuple[Any, ...]] = []
        for department_id, listed in COURSES.items():
            for number, title, title_zh, credits in listed:
                code = f"{codes[department_id]}{number}"
                courses.append((len(courses) + 1, code, title, title_zh, department_id, credits, number // 100 * 100))
        con.executemany("INSERT INTO courses VALUES (?, ?, ?, ?, ?, ?, ?)", courses)

        sections: list[tuple[Any, ...]] = []
        rooms = [r for r in CLASSROOMS if r[0] not in UNUSED_ROOMS]
        for term in TERMS:
            for course in courses:
                if course[1] in NEVER_OFFERED:
                    continue
                level = int(course[6])
                if course[1] in COMMON_CORE:
                    copies = 3
                elif level == 100:
                    copies = 2 if rng.random() < 0.3 else 1
                else:
                    copies = 1 if rng.random() < (0.75 if level == 200 else 0.55) else 0
                staff = [i for i in teaching if i[4] == course[4]]
                for _ in range(copies):
                    room = rng.choice([r for r in rooms if (r[4] == "lecture hall") == (level == 100)])
                    seats = min(int(room[3]), 120 if level == 100 else rng.choice([30, 40, 60]))
                    sections.append(
                        (len(sections) + 1, course[0], term[0], rng.choice(staff)[0], room[0],
                         rng.choice(["Mon/Wed", "Mon/Wed", "Tue/Thu", "Tue/Thu", "Fri"]), rng.choice(TIMES), seats)
                    )  # fmt: skip
        con.executemany("INSERT INTO sections VALUES (?, ?, ?, ?, ?, ?, ?, ?)", sections)

        students: list[tuple[Any, ...]] = []
        ability: dict[int, float] = {}
        majors = [d[0] for d in DEPARTMENTS]
        for sid in range(1, 261):
            cohort = COHORTS[(sid - 1) * len(COHORTS) // 260]
            gender = rng.choice("FM")
            first = rng.choice(STUDENT_FIRST_F if gender == "F" else STUDENT_FIRST_M)
            major = rng.choices(majors, weights=MAJOR_WEIGHTS)[0]
            advisor = rng.choice([i for i in teaching if i[4] == major])[0]
            birth = random_day(rng, dt.date(cohort - 19, 1, 1), dt.date(cohort - 17, 8, 31))
            admitted = random_day(rng, dt.date(cohort, 8, 25), dt.date(cohort, 9, 5))
            status = "graduated" if cohort == 2020 else ("on_leave" if rng.random() < 0.06 else "active")
            students.append(
                (sid, first, rng.choice(STUDENT_LAST), gender, birth, rng.choice(HOMETOWNS), major, advisor, admitted,
                 status)
            )  # fmt: skip
            ability[sid] = min(3.9, max(1.2, rng.gauss(3.0, 0.55)))
        con.executemany("INSERT INTO students VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", students)

        enrollments: list[tuple[Any, ...]] = []
        course_of = {c[0]: c for c in courses}
        seats_taken: dict[int, int] = {}
        taken: dict[int, set[int]] = {}  # student -> courses enrolled in before
        for term in TERMS:
            year = _academic_year(term)
            term_sections = [s for s in sections if s[2] == term[0]]
            in_progress = str(term[2]) <= TODAY.isoformat() <= str(term[3])
            for student in students:
                sid, cohort = int(student[0]), int(str(student[8])[:4])
                study_year = year - cohort + 1
                if not 1 <= study_year <= 4:
                    continue
                if student[9] == "on_leave" and year >= 2024:
                    continue
                # open sections of courses the student has not taken, at most a year above their level
                options = [s for s in term_sections if seats_taken.get(s[0], 0) < s[7]
                           and s[1] not in taken.setdefault(sid, set())
                           and int(course_of[s[1]][6]) <= 100 * study_year + 100]  # fmt: skip
                rng.shuffle(options)
                chosen: list[tuple[Any, ...]] = []
                core = [s for s in options if course_of[s[1]][1] in COMMON_CORE] if study_year == 1 else []
                own = [s for s in options if course_of[s[1]][4] == student[6]]
                other = [s for s in options if course_of[s[1]][4] != student[6]]
                for pool, n in ((core, 2), (own, rng.choice([2, 2, 3])), (other, rng.choice([1, 1, 2]))):
                    picked = 0
                    for s in pool:
                        if picked == n:
                            break
                        if s[1] not in {c[1] for c in chosen}:
                            chosen.append(s)
                            picked += 1
                for s in chosen:
                    seats_taken[s[0]] = seats_taken.get(s[0], 0) + 1
                    taken[sid].add(s[1])
                    start = dt.date.fromisoformat(str(term[2]))
                    enrolled_on = random_day(rng, start - dt.timedelta(days=21), start + dt.timedelta(days=6))
                    level_penalty = (int(course_of[s[1]][6]) - 100) / 400
                    if in_progress:
                        row: tuple[Any, ...] = ("in_progress", None, None)
                    elif rng.random() < 0.05:
                        row = ("withdrawn", None, None)
                    else:
                        score = rng.gauss(ability[sid] - level_penalty, 0.5)
                        letter, points = next(((g, p) for cut, g, p in GRADES if score >= cut), ("F", 0.0))
                        row = ("completed", letter, points)
                    enrollments.append((len(enrollments) + 1, sid, s[0], enrolled_on, *row))
        con.executemany("INSERT INTO enrollments VALUES (?, ?, ?, ?, ?, ?, ?)", enrollments)

        # Awards each October for the academic year before: merit to the best grades, the rest by need.
        awards: list[tuple[Any, ...]] = []

        def award(year: int, scholarship_id: int, student_id: int, given: set[int]) -> None:
            day = random_day(rng, dt.date(year, 10, 8), dt.date(year, 10, 31))
            awards.append((len(awards) + 1, scholarship_id, student_id, day))
            given.add(student_id)

        for year in (2023, 2024):
            finished = {t[0] for t in TERMS if _academic_year(t) == year - 1}
            earned: dict[int, list[float]] = {}
            for e in enrollments:
                if e[6] is not None and sections[e[2] - 1][2] in finished:
                    earned.setdefault(int(e[1]), []).append(float(e[6]))
            eligible = [st for st in students if st[0] in earned and (st[9] != "graduated" or year == 2023)]
            ranked = sorted(eligible, key=lambda st: (-sum(earned[st[0]]) / len(earned[st[0]]), st[0]))
            given: set[int] = set()
            for st in ranked[:6]:
                award(year, 1, int(st[0]), given)
            for st in [st for st in ranked[6:40] if st[6] in (1, 2, 3, 4)][:8]:
                award(year, 2, int(st[0]), given)
            for st in [st for st in ranked if st[3] == "F" and st[6] in (1, 8) and st[0] not in given][:3]:
                award(year, 3, int(st[0]), given)
            rest = [st for st in eligible if st[0] not in given]
            for scholarship_id, n in NEED_AND_SERVICE_AWARDS[year]:
                for st in rng.sample(rest, n):
                    rest.remove(st)
                    award(year, scholarship_id, int(st[0]), given)
        con.executemany("INSERT INTO scholarship_awards VALUES (?, ?, ?, ?)", awards)
    return Path(path)


def ensure_unseen_database(db_dir: str | Path) -> Path:
    """The unseen database in Spider's layout under ``db_dir``, built when missing or outdated."""
    return ensure_database(db_dir, UNSEEN_DB_ID, UNSEEN_VERSION, build_unseen_database)


def unseen_set_path() -> Path:
    """The unseen set: hand-written Spider-format questions (English and Chinese) over the university
    database (``UNSEEN_DB_ID``), never tuned on; it measures fine-tuning on a schema never seen."""
    return Path(__file__).parent / "data" / "unseen.json"
