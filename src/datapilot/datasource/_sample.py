"""The sample database: a small wholesale business, built deterministically into a SQLite file.

Seven related tables (regions, employees, customers, suppliers, products, orders, order_items) with
comments, keys and two years of orders. The same seed always gives the same rows, so the shipped
text-to-SQL dev set's gold answers stay valid. ``python -m datapilot.datasource.sample PATH`` builds it.
"""

from __future__ import annotations

import datetime as dt
import random
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SAMPLE_NAME = "sample"
SAMPLE_FILE = "sample_business.sqlite"
SAMPLE_VERSION = 2
SEED = 20240501

SCHEMA = """
CREATE TABLE regions (
  region_id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,            -- sales region
  country TEXT NOT NULL
);
CREATE TABLE employees (
  employee_id INTEGER PRIMARY KEY,
  first_name TEXT NOT NULL,
  last_name TEXT NOT NULL,
  title TEXT NOT NULL,           -- job title
  region_id INTEGER NOT NULL REFERENCES regions(region_id),
  manager_id INTEGER REFERENCES employees(employee_id),
  hire_date TEXT NOT NULL,       -- YYYY-MM-DD
  salary REAL NOT NULL           -- yearly, USD
);
CREATE TABLE customers (
  customer_id INTEGER PRIMARY KEY,
  company_name TEXT NOT NULL,
  contact_name TEXT NOT NULL,
  city TEXT NOT NULL,
  region_id INTEGER NOT NULL REFERENCES regions(region_id),
  segment TEXT NOT NULL,         -- Retail, Wholesale or Online
  signup_date TEXT NOT NULL      -- YYYY-MM-DD
);
CREATE TABLE suppliers (
  supplier_id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  country TEXT NOT NULL
);
CREATE TABLE products (
  product_id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  category TEXT NOT NULL,        -- Beverages, Snacks, Dairy, Bakery, Produce, Household
  supplier_id INTEGER NOT NULL REFERENCES suppliers(supplier_id),
  unit_price REAL NOT NULL,      -- list price, USD
  unit_cost REAL NOT NULL,       -- purchase cost, USD
  discontinued INTEGER NOT NULL DEFAULT 0  -- 1 if no longer sold
);
CREATE TABLE orders (
  order_id INTEGER PRIMARY KEY,
  customer_id INTEGER NOT NULL REFERENCES customers(customer_id),
  employee_id INTEGER NOT NULL REFERENCES employees(employee_id),
  order_date TEXT NOT NULL,      -- YYYY-MM-DD
  status TEXT NOT NULL,          -- shipped, delivered, cancelled, pending
  shipping_cost REAL NOT NULL
);
CREATE TABLE order_items (
  order_item_id INTEGER PRIMARY KEY,
  order_id INTEGER NOT NULL REFERENCES orders(order_id),
  product_id INTEGER NOT NULL REFERENCES products(product_id),
  quantity INTEGER NOT NULL,
  unit_price REAL NOT NULL,      -- price charged, USD
  discount REAL NOT NULL DEFAULT 0  -- fraction, 0 to 0.2
);
"""

REGIONS = [
    (1, "North", "USA"),
    (2, "South", "USA"),
    (3, "East", "USA"),
    (4, "West", "USA"),
    (5, "Central Europe", "Germany"),
    (6, "Asia Pacific", "China"),
]
CITIES = {
    1: ["Chicago", "Minneapolis", "Detroit"],
    2: ["Houston", "Atlanta", "Miami"],
    3: ["New York", "Boston", "Philadelphia"],
    4: ["Seattle", "San Francisco", "Los Angeles"],
    5: ["Berlin", "Munich", "Vienna"],
    6: ["Shanghai", "Beijing", "Singapore"],
}
FIRST = ["Alice", "Bob", "Carol", "David", "Emma", "Frank", "Grace", "Henry", "Iris", "Jack", "Karen", "Leo",
         "Mia", "Noah", "Olivia", "Paul", "Quinn", "Rosa", "Sam", "Tina", "Wei", "Li", "Hans", "Anna"]  # fmt: skip
LAST = ["Smith", "Johnson", "Brown", "Garcia", "Miller", "Davis", "Chen", "Wang", "Müller", "Schmidt", "Lee",
        "Walker", "Young", "King", "Scott", "Green", "Baker", "Zhang", "Liu", "Fischer"]  # fmt: skip
SUPPLIERS = [
    (1, "Fresh Farms Co", "USA"),
    (2, "Alpine Dairy", "Germany"),
    (3, "Golden Grain Bakery", "USA"),
    (4, "Pacific Beverages", "China"),
    (5, "CleanHome Ltd", "Germany"),
    (6, "Crunchy Snacks Inc", "USA"),
    (7, "Green Valley Produce", "USA"),
    (8, "Tea Garden Trading", "China"),
]
PRODUCTS = {
    "Beverages": (4, ["Green Tea", "Black Coffee Beans", "Orange Juice", "Sparkling Water", "Oolong Tea",
                      "Cola", "Lemonade", "Jasmine Tea"], (2.5, 18.0)),
    "Snacks": (6, ["Potato Chips", "Salted Pretzels", "Trail Mix", "Chocolate Bar", "Rice Crackers",
                   "Granola Bar"], (1.5, 6.0)),
    "Dairy": (2, ["Whole Milk", "Greek Yogurt", "Cheddar Cheese", "Butter", "Cream Cheese", "Mozzarella"],
              (1.8, 9.0)),
    "Bakery": (3, ["Sourdough Bread", "Croissant", "Bagels", "Rye Bread", "Muffins", "Baguette"], (1.2, 7.5)),
    "Produce": (7, ["Apples", "Bananas", "Tomatoes", "Avocados", "Spinach", "Carrots", "Oranges"], (0.8, 5.0)),
    "Household": (5, ["Dish Soap", "Paper Towels", "Laundry Detergent", "Sponges", "Trash Bags", "Glass Cleaner",
                      "Hand Soap"], (2.0, 15.0)),
}  # fmt: skip
COMPANY_WORDS = ["Corner", "Market", "Family", "Urban", "Sunrise", "Harbor", "Maple", "Lotus", "River", "Summit",
                 "Golden", "Metro", "Village", "Star", "Oak", "Pearl"]  # fmt: skip
COMPANY_KINDS = ["Grocers", "Foods", "Mart", "Deli", "Store", "Supplies", "Trading", "Cafe"]
SEGMENTS = ["Retail", "Wholesale", "Online"]
STATUSES = ["delivered"] * 14 + ["shipped"] * 3 + ["cancelled"] * 2 + ["pending"]
TITLES = ["Sales Representative"] * 3 + ["Senior Sales Representative", "Account Manager"]


def random_day(rng: random.Random, start: dt.date, end: dt.date) -> str:
    """A day between ``start`` and ``end`` (both included), ISO-formatted."""
    return (start + dt.timedelta(days=rng.randrange((end - start).days + 1))).isoformat()


def build_sample_database(path: str | Path) -> Path:
    """Write the sample database to ``path`` (replacing it) and return the path."""
    rng = random.Random(SEED)
    with writing_database(path, SAMPLE_VERSION) as con:
        con.executescript(SCHEMA)
        con.executemany("INSERT INTO regions VALUES (?, ?, ?)", REGIONS)

        employees: list[tuple[Any, ...]] = []
        eid = 0
        for region_id, _, _ in REGIONS:  # one manager per region, then 2-3 reps reporting to them
            eid += 1
            manager = eid
            employees.append(
                (eid, rng.choice(FIRST), rng.choice(LAST), "Regional Manager", region_id, None,
                 random_day(rng, dt.date(2016, 1, 1), dt.date(2019, 12, 31)), float(rng.randrange(95, 130) * 1000))
            )  # fmt: skip
            for _ in range(2 + region_id % 2):
                eid += 1
                employees.append(
                    (eid, rng.choice(FIRST), rng.choice(LAST), rng.choice(TITLES), region_id, manager,
                     random_day(rng, dt.date(2018, 1, 1), dt.date(2023, 6, 30)), float(rng.randrange(48, 90) * 1000))
                )  # fmt: skip
        # A star seller out-earns her manager (the kind of row a self-join question should find).
        star = list(employees[-1])
        star[3], star[7] = "Senior Sales Representative", float(employees[int(star[5]) - 1][7]) + 4000.0
        employees[-1] = tuple(star)
        con.executemany("INSERT INTO employees VALUES (?, ?, ?, ?, ?, ?, ?, ?)", employees)
        reps_by_region: dict[int, list[int]] = {}
        for e in employees:
            reps_by_region.setdefault(int(e[4]), []).append(int(e[0]))

        customers: list[tuple[Any, ...]] = []
        names: set[str] = set()
        for cid in range(1, 121):
            region_id = rng.choice([1, 2, 3, 4, 4, 3, 5, 6])
            while True:
                company = f"{rng.choice(COMPANY_WORDS)} {rng.choice(COMPANY_KINDS)}"
                if company not in names:
                    break
                company = f"{company} {rng.choice(CITIES[region_id])}"
                if company not in names:
                    break
            names.add(company)
            customers.append(
                (cid, company, f"{rng.choice(FIRST)} {rng.choice(LAST)}", rng.choice(CITIES[region_id]), region_id,
                 rng.choice(SEGMENTS), random_day(rng, dt.date(2021, 1, 1), dt.date(2024, 6, 30)))
            )  # fmt: skip
        con.executemany("INSERT INTO customers VALUES (?, ?, ?, ?, ?, ?, ?)", customers)
        con.executemany("INSERT INTO suppliers VALUES (?, ?, ?)", SUPPLIERS)

        products = []
        pid = 0
        for category, (supplier, items, (lo, hi)) in PRODUCTS.items():
            for item in items:
                pid += 1
                price = round(rng.uniform(lo, hi), 2)
                cost = round(price * rng.uniform(0.45, 0.75), 2)
                products.append((pid, item, category, supplier, price, cost, 1 if rng.random() < 0.08 else 0))
        con.executemany("INSERT INTO products VALUES (?, ?, ?, ?, ?, ?, ?)", products)

        on_sale = [p for p in products if not p[6]]  # discontinued products were never ordered
        orders: list[tuple[Any, ...]] = []
        items_rows: list[tuple[Any, ...]] = []
        item_id = 0
        region_of = {c[0]: c[4] for c in customers}
        signup = {c[0]: c[6] for c in customers}
        for oid in range(1, 1501):
            cid = rng.randrange(1, 113)  # the newest customers (113-120) have not ordered yet
            start = max(dt.date(2023, 1, 1), dt.date.fromisoformat(str(signup[cid])))
            day = random_day(rng, start, dt.date(2024, 12, 31)) if start <= dt.date(2024, 12, 31) else "2024-12-31"
            status = "pending" if day >= "2024-12-20" else rng.choice(STATUSES)
            orders.append(
                (oid, cid, rng.choice(reps_by_region[int(region_of[cid])]), day, status,
                 round(rng.uniform(4, 40), 2))
            )  # fmt: skip
            for product in rng.sample(on_sale, rng.randint(1, 4)):
                item_id += 1
                discount = rng.choice([0, 0, 0, 0.05, 0.1, 0.15, 0.2])
                items_rows.append((item_id, oid, product[0], rng.randint(1, 24), product[4], discount))
        con.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?)", orders)
        con.executemany("INSERT INTO order_items VALUES (?, ?, ?, ?, ?, ?)", items_rows)
    return Path(path)


@contextmanager
def writing_database(path: str | Path, version: int) -> Iterator[sqlite3.Connection]:
    """A connection to a new SQLite database for ``path``: written to a temporary file beside it,
    stamped with ``PRAGMA user_version = version`` and moved into place only when the block ends
    without an error (a failed build never leaves a half-written database where one is expected)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.unlink(missing_ok=True)
    con = sqlite3.connect(tmp)
    try:
        yield con
        con.execute(f"PRAGMA user_version = {int(version)}")
        con.commit()
    finally:
        con.close()
    tmp.replace(path)


def ensure_database(db_dir: str | Path, db_id: str, version: int, build: Callable[[Path], Path]) -> Path:
    """``db_dir/db_id/db_id.sqlite`` (Spider's layout), built by ``build`` when missing or outdated."""
    path = Path(db_dir) / db_id / f"{db_id}.sqlite"
    if not has_user_version(path, version):
        build(path)
    return path


def has_user_version(path: Path, version: int) -> bool:
    """Whether the SQLite file at ``path`` exists, opens and carries ``PRAGMA user_version = version``
    (how generated databases say which generator wrote them)."""
    if not path.is_file():
        return False
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            row = con.execute("PRAGMA user_version").fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return False
    return row is not None and int(row[0]) == version


def sample_is_current(path: Path) -> bool:
    return has_user_version(path, SAMPLE_VERSION)


def ensure_sample_database(folder: Path) -> Path:
    """The sample database under ``folder``, built when missing or from an older version."""
    path = folder / SAMPLE_FILE
    if not sample_is_current(path):
        build_sample_database(path)
    return path
