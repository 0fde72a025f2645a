"""The held-out evaluation set's database: a small chain of clinics, built deterministically.

The dev set is what the text-to-SQL pipeline is tuned on; figures are also reported on this set,
which nobody tunes on, over a database of another business (no orders, customers or products).
Seven related tables (clinics, departments, doctors, patients, appointments, medications,
prescriptions) with keys, two years of visits and the patients' complaints in Chinese, as the front
desk wrote them. The same seed always gives the same rows, so the set's gold answers stay valid.
``ensure_heldout_database(DIR)`` builds ``DIR/clinic/clinic.sqlite`` (Spider's layout) when missing;
``datapilot eval text2sql --set heldout`` does so under ``HOME/eval``.
"""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Any

from datapilot.datasource import ensure_database, random_day, writing_database

HELDOUT_DB_ID = "clinic"
HELDOUT_VERSION = 1
SEED = 20250307
LAST_DAY = dt.date(2024, 12, 31)  # the last day of visits in the data
SCHEDULED_FROM = dt.date(2024, 12, 16)  # the data's "today": visits from here on are still to come

SCHEMA = """
CREATE TABLE clinics (
  clinic_id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  city TEXT NOT NULL,
  opened_on TEXT NOT NULL        -- YYYY-MM-DD
);
CREATE TABLE departments (
  department_id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,            -- medical specialty
  floor INTEGER NOT NULL
);
CREATE TABLE doctors (
  doctor_id INTEGER PRIMARY KEY,
  first_name TEXT NOT NULL,
  last_name TEXT NOT NULL,
  title TEXT NOT NULL,           -- Resident, Attending Physician or Chief Physician
  department_id INTEGER NOT NULL REFERENCES departments(department_id),
  clinic_id INTEGER NOT NULL REFERENCES clinics(clinic_id),
  hire_date TEXT NOT NULL,       -- YYYY-MM-DD
  consultation_fee REAL NOT NULL -- per visit, CNY
);
CREATE TABLE patients (
  patient_id INTEGER PRIMARY KEY,
  first_name TEXT NOT NULL,
  last_name TEXT NOT NULL,
  gender TEXT NOT NULL,          -- F or M
  birth_date TEXT NOT NULL,      -- YYYY-MM-DD
  city TEXT NOT NULL,
  insurance_plan TEXT NOT NULL,  -- Basic, Standard, Premium or Self-pay
  registered_on TEXT NOT NULL    -- YYYY-MM-DD
);
CREATE TABLE appointments (
  appointment_id INTEGER PRIMARY KEY,
  patient_id INTEGER NOT NULL REFERENCES patients(patient_id),
  doctor_id INTEGER NOT NULL REFERENCES doctors(doctor_id),
  appointment_date TEXT NOT NULL, -- YYYY-MM-DD
  status TEXT NOT NULL,          -- completed, cancelled, no_show or scheduled
  chief_complaint TEXT NOT NULL, -- the patient's complaint, in Chinese
  fee_charged REAL NOT NULL      -- CNY; 0 unless completed
);
CREATE TABLE medications (
  medication_id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  category TEXT NOT NULL,        -- Antibiotic, Analgesic, Antihistamine, Cardiovascular, ...
  manufacturer TEXT NOT NULL,
  unit_price REAL NOT NULL       -- per pack, CNY
);
CREATE TABLE prescriptions (
  prescription_id INTEGER PRIMARY KEY,
  appointment_id INTEGER NOT NULL REFERENCES appointments(appointment_id),
  medication_id INTEGER NOT NULL REFERENCES medications(medication_id),
  quantity INTEGER NOT NULL,     -- packs
  days_supply INTEGER NOT NULL
);
"""

CLINICS = [
    (1, "Riverside Clinic", "Shanghai", "2012-04-16"),
    (2, "Westlake Clinic", "Hangzhou", "2015-09-01"),
    (3, "Pine Hill Clinic", "Suzhou", "2018-03-12"),
    (4, "Harbor Clinic", "Ningbo", "2021-06-28"),
]
# department -> (floor, complaints, medication categories, fee range)
DEPARTMENTS = {
    "General Practice": (1, ["感冒", "发烧", "咳嗽", "体检", "喉咙痛"], ["Antibiotic", "Analgesic", "Vitamin"],
                         (30, 60)),
    "Pediatrics": (2, ["发烧", "咳嗽", "腹泻", "皮疹"], ["Antibiotic", "Antihistamine", "Vitamin"], (40, 80)),
    "Cardiology": (3, ["胸闷", "心悸", "高血压复查"], ["Cardiovascular"], (80, 150)),
    "Dermatology": (2, ["皮疹", "痤疮", "皮肤瘙痒"], ["Dermatological", "Antihistamine"], (50, 100)),
    "Orthopedics": (4, ["腰痛", "膝关节痛", "扭伤"], ["Analgesic"], (60, 120)),
    "Neurology": (5, ["头痛", "头晕", "失眠"], ["Analgesic", "Sedative"], (80, 160)),
    "Ophthalmology": (3, ["视力模糊", "眼睛干涩"], ["Ophthalmic"], (50, 90)),
}  # fmt: skip
# clinic -> departments it runs (the newest clinic has no cardiology, neurology or ophthalmology)
CLINIC_DEPARTMENTS = {
    1: [1, 2, 3, 4, 5, 6, 7],
    2: [1, 2, 3, 4, 5, 6],
    3: [1, 2, 4, 5, 7],
    4: [1, 2, 4, 5],
}
MEDICATIONS = [
    ("Amoxicillin 500mg", "Antibiotic", "Huaxin Pharma", 28.5),
    ("Azithromycin 250mg", "Antibiotic", "Eastbridge Labs", 46.0),
    ("Cefuroxime 250mg", "Antibiotic", "Huaxin Pharma", 39.8),
    ("Ibuprofen 400mg", "Analgesic", "Northstar Health", 15.6),
    ("Paracetamol 500mg", "Analgesic", "Northstar Health", 9.9),
    ("Diclofenac Gel", "Analgesic", "Alpenwerk", 32.0),
    ("Loratadine 10mg", "Antihistamine", "Eastbridge Labs", 21.5),
    ("Cetirizine 10mg", "Antihistamine", "Alpenwerk", 18.2),
    ("Amlodipine 5mg", "Cardiovascular", "Huaxin Pharma", 35.4),
    ("Metoprolol 50mg", "Cardiovascular", "Alpenwerk", 42.7),
    ("Atorvastatin 20mg", "Cardiovascular", "Eastbridge Labs", 58.9),
    ("Aspirin 100mg", "Cardiovascular", "Northstar Health", 12.3),
    ("Vitamin C 500mg", "Vitamin", "Sunleaf Nutrition", 16.8),
    ("Vitamin D3 1000IU", "Vitamin", "Sunleaf Nutrition", 24.0),
    ("Hydrocortisone Cream", "Dermatological", "Alpenwerk", 27.6),
    ("Adapalene Gel", "Dermatological", "Eastbridge Labs", 64.5),
    ("Clotrimazole Cream", "Dermatological", "Huaxin Pharma", 19.4),
    ("Zolpidem 10mg", "Sedative", "Northstar Health", 55.0),
    ("Melatonin 3mg", "Sedative", "Sunleaf Nutrition", 29.9),
    ("Artificial Tears", "Ophthalmic", "Clearview Optics", 22.8),
    ("Tobramycin Eye Drops", "Ophthalmic", "Clearview Optics", 37.5),
    ("Prednisolone Eye Drops", "Ophthalmic", "Clearview Optics", 48.0),  # in stock, never prescribed
    ("Omeprazole 20mg", "Gastrointestinal", "Huaxin Pharma", 31.2),  # no department prescribes it here
]
NEVER_PRESCRIBED = {"Prednisolone Eye Drops"}
DOCTOR_FIRST = ["Amelia", "Benjamin", "Chloe", "Daniel", "Eleanor", "Felix", "Hannah", "Isaac", "Julia", "Lucas",
                "Mei", "Nathan", "Priya", "Ryan", "Sofia", "Thomas", "Xin", "Yuki", "Hao", "Lin"]  # fmt: skip
DOCTOR_LAST = ["Zhou", "Wu", "Sun", "Patel", "Hughes", "Lin", "Ma", "Tanaka", "Ortiz", "Gao", "Foster", "Xu",
               "Reid", "He", "Cohen", "Luo"]  # fmt: skip
PATIENT_FIRST_F = ["Ying", "Jing", "Fang", "Xiaomei", "Lan", "Hui", "Sarah", "Emily", "Laura", "Nina", "Qing",
                   "Rui", "Yan", "Ting"]  # fmt: skip
PATIENT_FIRST_M = ["Wei", "Jun", "Lei", "Tao", "Bo", "Hao", "Jian", "Ming", "Peter", "James", "Kevin", "Yong",
                   "Qiang", "Feng"]  # fmt: skip
PATIENT_LAST = ["Wang", "Li", "Zhang", "Liu", "Chen", "Yang", "Huang", "Zhao", "Wu", "Zhou", "Xu", "Sun", "Ma",
                "Zhu", "Hu", "Guo", "He", "Lin", "Brown", "Miller"]  # fmt: skip
PATIENT_CITIES = ["Shanghai"] * 5 + ["Hangzhou"] * 4 + ["Suzhou"] * 3 + ["Ningbo"] * 2 + ["Nanjing", "Wuxi"]
HOME_CLINIC = {"Shanghai": 1, "Hangzhou": 2, "Suzhou": 3, "Ningbo": 4, "Nanjing": 3, "Wuxi": 3}
PLANS = ["Basic"] * 4 + ["Standard"] * 3 + ["Premium"] * 2 + ["Self-pay"]
STATUSES = ["completed"] * 16 + ["cancelled"] * 3 + ["no_show"] * 2
TITLES = ["Resident", "Attending Physician", "Attending Physician", "Chief Physician"]


def build_heldout_database(path: str | Path) -> Path:
    """Write the held-out clinic database to ``path`` (replacing it) and return the path."""
    rng = random.Random(SEED)
    with writing_database(path, HELDOUT_VERSION) as con:
        con.executescript(SCHEMA)
        con.executemany("INSERT INTO clinics VALUES (?, ?, ?, ?)", CLINICS)
        departments = list(DEPARTMENTS.items())
        con.executemany(
            "INSERT INTO departments VALUES (?, ?, ?)",
            [(i, name, floor) for i, (name, (floor, *_)) in enumerate(departments, 1)],
        )

        doctors: list[tuple[Any, ...]] = []
        used_names: set[tuple[str, str]] = set()
        for clinic_id, _, _, opened in CLINICS:
            for department_id in CLINIC_DEPARTMENTS[clinic_id]:
                lo, hi = departments[department_id - 1][1][3]
                # big departments at the older clinics get a second doctor
                for k in range(2 if department_id in (1, 2) and clinic_id <= 2 else 1):
                    while (name := (rng.choice(DOCTOR_FIRST), rng.choice(DOCTOR_LAST))) in used_names:
                        pass
                    used_names.add(name)
                    title = "Chief Physician" if k == 0 and clinic_id == 1 else rng.choice(TITLES)
                    doctors.append(
                        (len(doctors) + 1, *name, title, department_id, clinic_id,
                         random_day(rng, dt.date.fromisoformat(opened), dt.date(2022, 12, 31)),
                         float(rng.randrange(lo, hi + 1, 5)))
                    )  # fmt: skip
        # A resident hired in the last weeks of the data: on the roster, no visits yet.
        doctors.append(
            (len(doctors) + 1, "Grace", "Okafor", "Resident", 4, 2, "2024-12-02", float(departments[3][1][3][0]))
        )
        con.executemany("INSERT INTO doctors VALUES (?, ?, ?, ?, ?, ?, ?, ?)", doctors)
        seeing = [d for d in doctors if d[6] < "2024-12-01"]

        patients: list[tuple[Any, ...]] = []
        for pid in range(1, 181):
            gender = rng.choice("FM")
            first = rng.choice(PATIENT_FIRST_F if gender == "F" else PATIENT_FIRST_M)
            birth = random_day(rng, dt.date(1940, 1, 1), dt.date(2021, 12, 31))
            registered = random_day(rng, max(dt.date(2019, 1, 1), dt.date.fromisoformat(birth)), dt.date(2024, 11, 30))
            patients.append(
                (pid, first, rng.choice(PATIENT_LAST), gender, birth, rng.choice(PATIENT_CITIES), rng.choice(PLANS),
                 registered)
            )  # fmt: skip
        con.executemany("INSERT INTO patients VALUES (?, ?, ?, ?, ?, ?, ?, ?)", patients)

        appointments: list[tuple[Any, ...]] = []
        prescriptions: list[tuple[Any, ...]] = []
        medications = [(i, *m) for i, m in enumerate(MEDICATIONS, 1)]
        by_category: dict[str, list[tuple[Any, ...]]] = {}
        for m in medications:
            if m[1] not in NEVER_PRESCRIBED:
                by_category.setdefault(str(m[2]), []).append(m)
        children_department = 2
        for aid in range(1, 701):
            patient = patients[rng.randrange(172)]  # the last registrants (173-180) have not visited yet
            age_2024 = 2024 - int(str(patient[4])[:4])
            home = HOME_CLINIC[str(patient[5])]
            clinic = home if rng.random() < 0.85 else rng.choice([1, 2, 3, 4])
            choices = [d for d in seeing if d[5] == clinic and (d[4] == children_department) == (age_2024 < 14)]
            doctor = rng.choice(choices)
            start = max(dt.date(2023, 1, 1), dt.date.fromisoformat(str(patient[7])))
            day = random_day(rng, start, LAST_DAY)
            status = "scheduled" if day >= SCHEDULED_FROM.isoformat() else rng.choice(STATUSES)
            _, (_, complaints, categories, _) = departments[int(doctor[4]) - 1]
            fee = float(doctor[7]) if status == "completed" else 0.0
            appointments.append((aid, patient[0], doctor[0], day, status, rng.choice(complaints), fee))
            if status == "completed" and rng.random() < 0.7:
                pool = [m for c in categories for m in by_category.get(c, [])]
                for m in rng.sample(pool, min(len(pool), rng.choice([1, 1, 1, 2]))):
                    prescriptions.append(
                        (len(prescriptions) + 1, aid, m[0], rng.randint(1, 3), rng.choice([3, 5, 7, 7, 14, 30]))
                    )
        con.executemany("INSERT INTO appointments VALUES (?, ?, ?, ?, ?, ?, ?)", appointments)
        con.executemany("INSERT INTO medications VALUES (?, ?, ?, ?, ?)", medications)
        con.executemany("INSERT INTO prescriptions VALUES (?, ?, ?, ?, ?)", prescriptions)
    return Path(path)


def ensure_heldout_database(db_dir: str | Path) -> Path:
    """The held-out database in Spider's layout under ``db_dir``, built when missing or outdated."""
    return ensure_database(db_dir, HELDOUT_DB_ID, HELDOUT_VERSION, build_heldout_database)
