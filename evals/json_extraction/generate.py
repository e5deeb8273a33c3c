#!/usr/bin/env python
"""Deterministic generator for the JSON-extraction eval.

    python evals/json_extraction/generate.py            # rewrites cases.jsonl, train.jsonl, schemas/
    python evals/json_extraction/generate.py --out DIR  # writes the same files under DIR

Every generated case is rendered from one structured record: ``expected`` is the
record and ``text`` is produced from it, so the labels are right by
construction. Test and train draw people, companies, cities, products,
medicines, venues and event topics from disjoint pools, and a train text that
comes too close to a test text (character 5-gram Jaccard) is drawn again.
The hand-written hard cases (``HANDWRITTEN`` below) are appended to the test set.
Output is byte-identical for the same source: one seeded RNG per split, no set
iteration, sorted JSON nowhere (key order follows the schema).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import re
import sys
import unicodedata
from pathlib import Path
from typing import Any

import schema_families as sf

HERE = Path(__file__).resolve().parent
SEED = 20250611
LEVELS = ("easy", "medium", "hard", "domain")
N_TEST = {"easy": 40, "medium": 40, "hard": 35, "domain": 35}  # hard includes the hand-written ones
N_TRAIN = {"easy": 533, "medium": 534, "hard": 467, "domain": 466}
FAMILIES = ("contact", "order", "event", "invoice", "prescription", "job_posting", "shipment")
DOMAIN_FAMILIES = ("prescription", "invoice", "shipment")
TRAIN_MAX_JACCARD = 0.7  # the generator's margin; tests/test_datasets.py checks < 0.8
NULL_P = {"easy": 0.15, "medium": 0.3, "hard": 0.35, "domain": 0.3}
GENERIC_SHARE = 0.4  # share of train rows drawn from the generic families of schema_families.py
N_UNSEEN_PER_FAMILY = {"easy": 3, "medium": 3, "hard": 4}  # unseen_cases.jsonl: 10 per held-out family

# --------------------------------------------------------------------------- schemas

STR: dict[str, Any] = {"type": "string"}
NSTR: dict[str, Any] = {"type": ["string", "null"]}
INT: dict[str, Any] = {"type": "integer"}
NINT: dict[str, Any] = {"type": ["integer", "null"]}
NUM: dict[str, Any] = {"type": "number"}
BOOL: dict[str, Any] = {"type": "boolean"}
DATE: dict[str, Any] = {"type": "string", "format": "date"}
NDATE: dict[str, Any] = {"type": ["string", "null"], "format": "date"}
CURRENCY: dict[str, Any] = {"type": "string", "enum": ["USD", "EUR", "GBP", "CHF"]}
NTIME: dict[str, Any] = {"type": ["string", "null"], "pattern": "^[0-2][0-9]:[0-5][0-9]$"}


def obj(props: dict[str, Any], nullable: bool = False) -> dict[str, Any]:
    """A closed object schema whose every property is a required key."""
    return {
        "type": ["object", "null"] if nullable else "object",
        "properties": props,
        "required": list(props),
        "additionalProperties": False,
    }


PLACE = obj({"city": STR, "country": STR})
SCHEMAS: dict[str, dict[str, Any]] = {
    "contact": obj(
        {
            "name": STR,
            "job_title": NSTR,
            "company": NSTR,
            "email": NSTR,
            "phone": NSTR,
            "location": obj({"city": NSTR, "country": NSTR}),
        }
    ),
    "order": obj(
        {
            "order_id": STR,
            "customer": STR,
            "order_date": DATE,
            "items": {"type": "array", "items": obj({"product": STR, "quantity": INT, "unit_price": NUM})},
            "total": NUM,
            "currency": CURRENCY,
        }
    ),
    "event": obj(
        {
            "title": STR,
            "date": DATE,
            "start_time": NTIME,
            "location": obj({"venue": STR, "city": STR}),
            "organizer": NSTR,
            "capacity": NINT,
        }
    ),
    "invoice": obj(
        {
            "invoice_number": STR,
            "vendor": STR,
            "client": STR,
            "issue_date": DATE,
            "due_date": NDATE,
            "total_amount": NUM,
            "currency": CURRENCY,
            "paid": BOOL,
        }
    ),
    "prescription": obj(
        {
            "patient": STR,
            "prescriber": STR,
            "medication": STR,
            "dose_mg": NUM,
            "times_per_day": INT,
            "duration_days": NINT,
            "refills": NINT,
        }
    ),
    "job_posting": obj(
        {
            "title": STR,
            "company": STR,
            "location": NSTR,
            "remote": BOOL,
            "salary": obj({"min": NUM, "max": NUM, "currency": CURRENCY}, nullable=True),
            "skills": {"type": "array", "items": STR},
        }
    ),
    "shipment": obj(
        {
            "tracking_number": STR,
            "carrier": STR,
            "origin": PLACE,
            "destination": PLACE,
            "ship_date": DATE,
            "packages": INT,
            "weight_kg": NUM,
        }
    ),
}

# --------------------------------------------------------------------------- pools
# Entity pools are split: test cases only use the "test" lists, train cases only the
# "train" lists. Shared vocabulary (job titles, skills, carriers) is not entity-like.

POOLS: dict[str, dict[str, list[Any]]] = {
    "test": {
        "first": [
            "Amara", "José", "Zoë", "Łukasz", "Søren", "Chloé", "Mei", "Oluwaseun", "Ingrid", "Mateus",
            "Aigerim", "Dmitri", "Priya", "Tomás", "Hana", "Kwame", "Élodie", "Rafael", "Yuki", "Niamh",
            "Björn", "Farah", "Luca", "Ayşe", "Nikolai", "Sofía", "Tariq", "Greta", "Wen", "Jonas",
        ],
        "last": [
            "Okafor", "Núñez", "Ørsted", "Kowalczyk", "Lindqvist", "Dubois", "Zhang", "Adeyemi", "Haugland",
            "Carvalho", "Seitkali", "Volkov", "Raman", "Echeverría", "Takahashi", "Mensah", "Lefèvre",
            "Moreno", "Sato", "Gallagher", "Åberg", "Haddad", "Bianchi", "Yılmaz", "Petrov", "Castillo",
            "Rahman", "Schäfer", "Liang", "Brandt",
        ],
        "company": [
            "Brightwater", "Kestrel", "Northwind", "Saffron", "Ironbark", "Bluefin", "Copperleaf", "Halcyon",
            "Juniper", "Larkspur", "Meridian", "Nimbus", "Orchid", "Pinecrest", "Quartzline", "Redwood",
            "Silverline", "Tidewater", "Umber", "Vantage", "Willowmere", "Zephyr", "Aurora", "Cobalt",
        ],
        "city": [
            ("Lisbon", "Portugal"), ("Kraków", "Poland"), ("Zürich", "Switzerland"), ("São Paulo", "Brazil"),
            ("Reykjavík", "Iceland"), ("Osaka", "Japan"), ("Nairobi", "Kenya"), ("Montréal", "Canada"),
            ("Málaga", "Spain"), ("Tromsø", "Norway"), ("Izmir", "Turkey"), ("Hanoi", "Vietnam"),
            ("Porto Alegre", "Brazil"), ("Düsseldorf", "Germany"), ("Gdańsk", "Poland"), ("Accra", "Ghana"),
            ("Wellington", "New Zealand"), ("Cork", "Ireland"), ("Lyon", "France"), ("Tartu", "Estonia"),
        ],
        "product_adj": [
            "Walnut", "Terracotta", "Sage Green", "Brushed Steel", "Linen", "Cobalt Blue", "Bamboo", "Slate",
            "Copper", "Pearl", "Smoked Oak", "Lavender",
        ],
        "medication": [
            "amoxicillin", "metformin", "lisinopril", "azithromycin", "sertraline", "omeprazole",
            "gabapentin", "prednisone", "cephalexin", "naproxen", "losartan", "doxycycline",
        ],
        "topic": [
            "Robotics", "Urban Farming", "Jazz", "Quantum Computing", "Ceramics", "Open Source",
            "Marine Biology", "Street Food", "Typography", "Astronomy", "Cycling", "Poetry",
            "Renewable Energy", "Chess",
        ],
        "venue": [
            "Marlowe", "Castellan", "Riverside", "Larchmont", "Greyfriars", "Bellweather", "Foxhollow",
            "Kingsmere", "Starling", "Whitcombe",
        ],
    },
    "train": {
        "first": [
            "Adele", "Ahmed", "Aiko", "Alejandro", "Anders", "André", "Anika", "Astrid", "Beatriz", "Benedikt",
            "Bongani", "Camille", "Carlos", "Catalina", "Cem", "Chiara", "Dagny", "Daniel", "Dávid", "Elif",
            "Emeka", "Emil", "Esther", "Fatima", "Felix", "Fiona", "François", "Gabriel", "Giulia", "Gökhan",
            "Hamza", "Hannah", "Hiroshi", "Ilse", "Imani", "Irene", "Ivan", "Jakub", "Jana", "Jarrah",
            "Javier", "Jiho", "Julia", "Kai", "Karin", "Kenji", "Lars", "Laila", "Leila", "Liam", "Linnea",
            "Lucía", "Magnus", "Malik", "Marek", "Maria", "Mariana", "Matteo", "Maya", "Mehmet", "Mia",
            "Miguel", "Nadia", "Naledi", "Noah", "Nora", "Olga", "Oskar", "Paulo", "Petra", "Ravi", "Renée",
            "Rin", "Rosa", "Sami", "Sanjay", "Sara", "Selin", "Siobhan", "Stefan", "Sunita", "Taro",
            "Thandiwe", "Theo", "Ulla", "Valentina", "Vikram", "Wiktoria", "Xavier", "Yara", "Yusuf",
            "Zainab", "Zofia",
        ],
        "last": [
            "Abbott", "Acheampong", "Albers", "Alvarez", "Andersson", "Bakker", "Barros", "Becker",
            "Bergström", "Bose", "Brennan", "Campos", "Chen", "Ćorić", "Costa", "Da Silva", "Demir", "Diallo",
            "Dimitriou", "Eriksen", "Esposito", "Farouk", "Fernández", "Fischer", "Fontaine", "García",
            "Gómez", "Grünewald", "Gupta", "Halvorsen", "Hernández", "Hoffmann", "Horvat", "Ibrahim",
            "Iwasaki", "Jansen", "Jovanović", "Kamau", "Kaur", "Keller", "Kim", "Kovács", "Krüger", "Laine",
            "Larsen", "Lopes", "Maalouf", "Mahlangu", "Martins", "Meyer", "Murphy", "Nakamura", "Navarro",
            "Ndlovu", "Nielsen", "Novak", "O'Brien", "Oliveira", "Öztürk", "Park", "Pereira", "Quinn",
            "Ramos", "Reyes", "Richter", "Rossi", "Ruiz", "Saarinen", "Santos", "Schmidt", "Sharma",
            "Sokolov", "Suzuki", "Svensson", "Tanaka", "Torres", "Varga", "Vasquez", "Wagner", "Walsh",
            "Weber", "Wójcik", "Wu", "Yamamoto", "Young", "Zając", "Ziegler", "Zimmermann",
        ],
        "company": [
            "Acorn", "Alder", "Amberly", "Anchor", "Apex", "Arbor", "Ashford", "Atlas", "Beacon", "Birch",
            "Blackstone", "Bluebell", "Boulder", "Bramble", "Cascade", "Cedar", "Clover", "Coral", "Crescent",
            "Crystal", "Cypress", "Delta", "Driftwood", "Ember", "Evergreen", "Falcon", "Fernhill", "Flint",
            "Foxglove", "Garnet", "Glacier", "Granite", "Harbor", "Hazel", "Heron", "Highland", "Horizon",
            "Indigo", "Ivory", "Jade", "Keystone", "Lagoon", "Lantern", "Linden", "Maple", "Marble",
            "Mistral", "Moss", "Oakridge", "Onyx", "Osprey", "Pebble", "Prairie", "Quill", "Raven", "Sable",
            "Sequoia", "Summit", "Thistle", "Topaz",
        ],
        "city": [
            ("Aarhus", "Denmark"), ("Adelaide", "Australia"), ("Antwerp", "Belgium"), ("Athens", "Greece"),
            ("Austin", "United States"), ("Barcelona", "Spain"), ("Bergen", "Norway"), ("Bilbao", "Spain"),
            ("Bologna", "Italy"), ("Bordeaux", "France"), ("Brno", "Czech Republic"),
            ("Bucharest", "Romania"), ("Busan", "South Korea"), ("Cape Town", "South Africa"),
            ("Chennai", "India"), ("Chicago", "United States"), ("Cluj-Napoca", "Romania"),
            ("Córdoba", "Argentina"), ("Dublin", "Ireland"), ("Edinburgh", "United Kingdom"),
            ("Eindhoven", "Netherlands"), ("Florence", "Italy"), ("Gothenburg", "Sweden"), ("Graz", "Austria"),
            ("Guadalajara", "Mexico"), ("Hamburg", "Germany"), ("Helsinki", "Finland"), ("Kyoto", "Japan"),
            ("Lagos", "Nigeria"), ("Leipzig", "Germany"), ("Liverpool", "United Kingdom"),
            ("Ljubljana", "Slovenia"), ("Malmö", "Sweden"), ("Marseille", "France"), ("Medellín", "Colombia"),
            ("Melbourne", "Australia"), ("Milan", "Italy"), ("Mumbai", "India"), ("Nantes", "France"),
            ("Oslo", "Norway"), ("Perth", "Australia"), ("Poznań", "Poland"), ("Rotterdam", "Netherlands"),
            ("Santiago", "Chile"), ("Seattle", "United States"), ("Seville", "Spain"), ("Tallinn", "Estonia"),
            ("Toronto", "Canada"), ("Valencia", "Spain"), ("Vancouver", "Canada"),
        ],
        "product_adj": [
            "Oak", "Cherry", "Navy", "Charcoal", "Mint", "Coral Pink", "Matte Black", "Olive", "Rose Gold",
            "Ceramic", "Cotton", "Glass", "Marble", "Teak", "Mustard", "Pine", "Silver", "Brass", "Wool",
            "Leather", "Ash Grey", "Cream", "Crimson", "Sand", "Jade", "Stone", "Birch", "Velvet", "Chrome",
            "Amber",
        ],
        "medication": [
            "atorvastatin", "amlodipine", "levothyroxine", "simvastatin", "ibuprofen", "ciprofloxacin",
            "clarithromycin", "fluoxetine", "citalopram", "escitalopram", "pantoprazole", "famotidine",
            "metoprolol", "propranolol", "furosemide", "hydrochlorothiazide", "warfarin", "clopidogrel",
            "montelukast", "cetirizine", "loratadine", "tramadol", "acyclovir", "valacyclovir",
            "nitrofurantoin", "clindamycin", "allopurinol", "tamsulosin", "spironolactone", "carbamazepine",
        ],
        "topic": [
            "Data Science", "Film", "Photography", "Architecture", "Blues", "Coffee", "Wine", "Design", "Cloud",
            "Security", "Gaming", "Fintech", "Healthcare", "Dance", "Theatre", "Gardening", "Birdwatching",
            "Climate", "Cybersecurity", "Machine Learning", "Folk Music", "Pottery", "Running", "Sailing",
            "Baking", "Fashion", "Comics", "History", "Linguistics", "Mathematics", "Painting", "Podcasting",
            "Startups", "Sustainability", "Yoga", "Bioinformatics", "Animation", "Journalism", "Mobile Apps",
            "Genomics",
        ],
        "venue": [
            "Ashdown", "Beaumont", "Briarwood", "Carlisle", "Chapelgate", "Dovecote", "Eastbrook", "Elmstead",
            "Fairhaven", "Glenmore", "Hawthorne", "Holloway", "Kensal", "Lambeth", "Langford", "Mayfield",
            "Millbrook", "Northgate", "Oakhurst", "Parkside", "Queensway", "Rosemont", "Southbank", "Stanmore",
            "Thornbury", "Upton", "Victoria", "Westfield", "Wexford", "Yarrow",
        ],
    },
}  # fmt: skip

COMPANY_SUFFIX = [
    "Labs", "Systems", "Trading", "Logistics", "Foods", "Design", "Group", "Works", "Analytics", "Supply",
    "Consulting", "Media", "Robotics", "Health", "Partners", "Textiles",
]  # fmt: skip
LEGAL_FORM = ["", "", "", " Ltd", " GmbH", " Inc.", " S.A.", " AB"]
PRODUCT_NOUN = [
    "Mug", "Desk Lamp", "Notebook", "Water Bottle", "Serving Tray", "Throw Pillow", "Tea Kettle", "Backpack",
    "Wall Clock", "Cutting Board", "Phone Stand", "Picnic Blanket", "Plant Pot", "Candle", "Bookend",
    "Umbrella", "Yoga Mat", "Coffee Grinder", "Wine Rack", "Laptop Sleeve",
]  # fmt: skip
JOB_TITLES = [
    "Data Analyst", "Backend Engineer", "Product Designer", "Marketing Manager", "Sales Representative",
    "DevOps Engineer", "Frontend Developer", "Accountant", "Customer Success Manager",
    "Machine Learning Engineer", "QA Engineer", "Technical Writer", "HR Generalist", "Project Manager",
    "Mobile Developer", "Site Reliability Engineer", "Content Strategist", "Financial Analyst",
    "Supply Chain Coordinator", "UX Researcher",
]  # fmt: skip
SKILLS = [
    "Python", "SQL", "Java", "Go", "Rust", "TypeScript", "React", "Kubernetes", "Docker", "AWS", "Figma",
    "Excel", "Tableau", "Spark", "Terraform", "Swift", "Kotlin", "Git", "Linux", "C++", "Salesforce", "SAP",
    "Photoshop", "Jira", "GraphQL", "PostgreSQL", "Node.js", "Scala", "Power BI",
]  # fmt: skip
CARRIERS = [
    "DHL Express", "FedEx", "UPS", "Maersk", "DB Schenker", "Kuehne+Nagel", "DSV", "CMA CGM", "Hapag-Lloyd",
    "TNT", "Royal Mail", "PostNL", "Aramex", "Yamato Transport",
]  # fmt: skip
EVENT_PREFIX = ["Annual", "International", "Spring", "Autumn", "Winter", "Summer", "Regional", "City", "", ""]
EVENT_KIND = ["Summit", "Conference", "Meetup", "Festival", "Workshop", "Expo", "Forum", "Fair", "Symposium"]
VENUE_KIND = ["Hall", "Arena", "Conference Centre", "Theatre", "Pavilion", "Gallery", "Library", "Auditorium"]
MAIL_HOSTS = ["mailbox.org", "fastmail.com", "proton.me", "outlook.com", "gmail.com"]
CURRENCIES = ["USD", "EUR", "GBP", "CHF"]
CUR_SYMBOL = {"USD": "$", "EUR": "€", "GBP": "£"}
CUR_WORD = {"USD": "dollars", "EUR": "euros", "GBP": "pounds", "CHF": "Swiss francs"}
MONTHS = [
    "January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
    "November", "December",
]  # fmt: skip
ONES = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
]  # fmt: skip
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]

# --------------------------------------------------------------------------- formatting


def words(n: int) -> str:
    """English words for 0 <= n < 1,000,000 ("two hundred and forty-five")."""
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + (f"-{ONES[n % 10]}" if n % 10 else "")
    if n < 1000:
        rest = n % 100
        return f"{ONES[n // 100]} hundred" + (f" and {words(rest)}" if rest else "")
    rest = n % 1000
    tail = "" if not rest else (f" and {words(rest)}" if rest < 100 else f" {words(rest)}")
    return f"{words(n // 1000)} thousand{tail}"


def ordinal(n: int) -> str:
    suffix = "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def a_an(word: str) -> str:
    if word.startswith(("HR", "SRE", "MBA")):
        return "an"
    if word.startswith(("UX", "Uni", "Use")):
        return "a"
    return "an" if word[:1].lower() in "aeiou" else "a"


def join_list(parts: list[str], conj: str = "and") -> str:
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + f" {conj} " + parts[-1]


def number(cents: int) -> int | float:
    """Cents -> the JSON number of the amount (an int when whole)."""
    return cents // 100 if cents % 100 == 0 else round(cents / 100, 2)


def grouped(value: int, sep: str) -> str:
    s = str(value)
    out = []
    while len(s) > 3:
        out.insert(0, s[-3:])
        s = s[:-3]
    out.insert(0, s)
    return sep.join(out)


def amount_str(cents: int, thou: str = ",", dec: str = ".", drop_zero: bool = False) -> str:
    whole, frac = divmod(cents, 100)
    if drop_zero and frac == 0:
        return grouped(whole, thou)
    return f"{grouped(whole, thou)}{dec}{frac:02d}"


def fmt_money(r: random.Random, cents: int, cur: str, level: str) -> str:
    """Render an amount in a style that suits the difficulty level."""
    sym = CUR_SYMBOL.get(cur)
    plain = amount_str(cents, drop_zero=cents % 100 == 0 and r.random() < 0.5)
    short = amount_str(cents, drop_zero=True)
    styles = [f"{cur} {plain}", f"{plain} {cur}"]
    if sym:
        styles += [f"{sym}{plain}", f"{sym}{plain}"]
    if level in ("medium", "hard", "domain"):
        styles += [f"{short} {CUR_WORD[cur]}", f"{cur}{short}" if cur != "CHF" else f"CHF {short}"]
    if level in ("hard", "domain"):
        if cur == "EUR":
            styles += [f"{amount_str(cents, '.', ',')} €", f"€{amount_str(cents, '.', ',')}"]
        if cur == "CHF":
            styles += [f"CHF {amount_str(cents, chr(39))}", f"{amount_str(cents, chr(39))} CHF"]
        if level == "hard" and cents % 10000 == 0 and cents <= 2_000_000:
            styles += [f"{words(cents // 100)} {CUR_WORD[cur]}"]
    return r.choice(styles)


def fmt_date(r: random.Random, d: dt.date, level: str) -> str:
    m = MONTHS[d.month - 1]
    iso = d.isoformat()
    styles = {
        "easy": [iso, f"{m} {d.day}, {d.year}", f"{d.day} {m} {d.year}"],
        "medium": [
            f"{m} {d.day}, {d.year}",
            f"{d.day} {m} {d.year}",
            f"{m[:3]} {d.day}, {d.year}",
            f"{ordinal(d.day)} {m} {d.year}",
            f"{d.year}/{d.month:02d}/{d.day:02d}",
        ],
        "hard": [
            f"the {ordinal(d.day)} of {m}, {d.year}",
            f"{m[:3]}. {ordinal(d.day)} {d.year}",
            f"{ordinal(d.day)} {m} {d.year}",
            f"{m} {d.day}, {d.year}",
        ],
        "domain": [
            f"{d.day:02d}{m[:3].upper()}{d.year % 100:02d}",
            f"{d.day:02d}-{m[:3]}-{d.year}",
            iso,
            f"{d.day:02d} {m[:3].upper()} {d.year}",
        ],
    }[level]
    if d.day > 12 and level != "easy":
        styles.append(f"{d.day:02d}.{d.month:02d}.{d.year}")  # unambiguous day.month.year
    return r.choice(styles)


def fmt_time(r: random.Random, h: int, m: int, level: str) -> str:
    h12 = h % 12 or 12
    ampm = "am" if h < 12 else "pm"
    with_ampm = f"{h12}:{m:02d} {ampm}" if m else f"{h12} {ampm}"
    if level == "easy":
        return r.choice([f"{h:02d}:{m:02d}", with_ampm])
    styles = [f"{h:02d}:{m:02d}", with_ampm, f"{h12}.{m:02d}{ampm}", f"{h}h{m:02d}"]
    if level == "hard":
        period = "in the morning" if h < 12 else ("in the afternoon" if h < 17 else "in the evening")
        if h == 12 and m == 0:
            styles = ["noon", "midday"]
        elif m == 0:
            styles = [f"{words(h12)} o'clock {period}", f"{words(h12)} {period}"]
        elif m == 30:
            styles = [f"half past {words(h12)} {period}"]
        elif m == 15:
            styles = [f"quarter past {words(h12)} {period}"]
        elif m == 45 and 13 <= h <= 20:
            styles = [f"quarter to {words((h + 1) % 12 or 12)} {period}"]
    return r.choice(styles)


def ascii_fold(s: str) -> str:
    s = s.translate(str.maketrans({"ø": "o", "Ø": "O", "ł": "l", "Ł": "L", "æ": "ae", "ß": "ss", "ı": "i"}))
    s = unicodedata.normalize("NFKD", s)
    return "".join(ch for ch in s if ch.isascii() and ch.isalpha()).lower()


# --------------------------------------------------------------------------- case generator


class Gen:
    """Draws entities from one split's pools; ``used`` keeps ids unique across splits."""

    def __init__(self, split: str, r: random.Random, used: set[str]) -> None:
        self.split = split
        self.r = r
        self.p = POOLS[split]
        self.used = used

    def uid(self, make: Any) -> str:
        while True:
            value = make()
            if value not in self.used:
                self.used.add(value)
                return value

    def name_parts(self) -> tuple[str, str]:
        return self.r.choice(self.p["first"]), self.r.choice(self.p["last"])

    def person(self, avoid: tuple[str, ...] = ()) -> str:
        while True:
            first, last = self.name_parts()
            name = f"{first} {last}"
            if name not in avoid and not any(name.split()[-1] in a for a in avoid):
                return name

    def company(self, avoid: tuple[str | None, ...] = ()) -> str:
        while True:
            name = f"{self.r.choice(self.p['company'])} {self.r.choice(COMPANY_SUFFIX)}{self.r.choice(LEGAL_FORM)}"
            if not any(a and a.split()[0] == name.split()[0] for a in avoid):
                return name

    def city(self, avoid: tuple[str | None, ...] = ()) -> tuple[str, str]:
        while True:
            c = self.r.choice(self.p["city"])
            if c[0] not in avoid:
                return c

    def date(self) -> dt.date:
        return dt.date(2023, 1, 1) + dt.timedelta(days=self.r.randint(0, 3 * 365))

    def products(self, n: int) -> list[str]:
        out: list[str] = []
        while len(out) < n:
            p = f"{self.r.choice(self.p['product_adj'])} {self.r.choice(PRODUCT_NOUN)}"
            if p not in out and all(p.split()[-1] != q.split()[-1] for q in out):
                out.append(p)
        return out

    def phone(self) -> str:
        r = self.r

        def d(n: int) -> str:
            return "".join(str(r.randint(0, 9)) for _ in range(n))

        return self.uid(
            lambda: r.choice(
                [
                    f"+1 {r.randint(201, 989)} 555 {d(4)}",
                    f"({r.randint(201, 989)}) 555-{d(4)}",
                    f"+44 20 {d(4)} {d(4)}",
                    f"+49 30 {d(7)}",
                    f"+351 21 {d(3)} {d(4)}",
                    f"+33 1 {d(2)} {d(2)} {d(2)} {d(2)}",
                ]
            )
        )

    def email(self, first: str, last: str, company: str | None) -> str:
        r = self.r
        host = ascii_fold("".join(company.split()[:2])) + ".com" if company else r.choice(MAIL_HOSTS)
        f, la = ascii_fold(first), ascii_fold(last)
        local = r.choice([f"{f}.{la}", f"{f[0]}{la}", f"{f}", f"{f}_{la}"])
        return self.uid(lambda: local + (str(r.randint(2, 99)) if r.random() < 0.3 else "") + "@" + host)

    def money_cents(self, lo: int, hi: int) -> int:
        return self.r.randint(lo, hi) * 100 + self.r.choice([0, 0, 0, 50, 99, 95, 25, 49, 10])


def place(city: str | None, country: str | None) -> str:
    return ", ".join(x for x in (city, country) if x)


# ----- contact


def gen_contact(g: Gen, level: str) -> tuple[str, dict[str, Any]]:
    r, pn = g.r, NULL_P[level]
    first, last = g.name_parts()
    name = f"{first} {last}"
    company = g.company() if r.random() > pn else None
    title = r.choice(JOB_TITLES) if r.random() > pn else None
    email = g.email(first, last, company) if r.random() > pn else None
    phone = g.phone() if r.random() > pn else None
    city, country = g.city()
    mode = r.random()
    if mode < pn / 3:
        city = country = None
    elif mode < 2 * pn / 3:
        country = None
    elif mode < pn:
        city = None
    loc = place(city, country)
    exp = {
        "name": name,
        "job_title": title,
        "company": company,
        "email": email,
        "phone": phone,
        "location": {"city": city, "country": country},
    }
    style = r.randrange(2)
    if level == "easy" and style == 0:
        lines = [f"Name: {name}"]
        extra = [
            f"Title: {title}" if title else "",
            f"Company: {company}" if company else "",
            f"Email: {email}" if email else "",
            f"Phone: {phone}" if phone else "",
            f"Location: {loc}" if loc else "",
        ]
        text = "\n".join(lines + [x for x in extra if x])
    elif level == "easy":
        if title and company:
            s = f"{name} is {a_an(title)} {title} at {company}"
        elif title:
            s = f"{name} works as {a_an(title)} {title}"
        elif company:
            s = f"{name} works at {company}"
        else:
            s = f"{name} is a new contact"
        s += f" and is based in {loc}." if loc else "."
        reach = [f"by email at {email}" if email else "", f"by phone on {phone}" if phone else ""]
        reach = [x for x in reach if x]
        if reach:
            s += f" You can reach {first} {' or '.join(reach)}."
        text = s
    elif level == "medium" and style == 0:
        role = " | ".join(x for x in (title, company) if x)
        lines = ["Thanks for your time today, talk soon.", "", "Best regards,", name]
        lines += [role] if role else []
        lines += [loc] if loc else []
        lines += [f"Tel. {phone}"] if phone else []
        lines += [email] if email else []
        text = "\n".join(lines)
    elif level == "medium":
        s = f"Met {name} at the trade fair"
        if title and company:
            s += f" ({title}, {company})"
        elif title or company:
            s += f" ({title or company})"
        s += "."
        if loc:
            s += f" {first} is based in {loc}."
        bits = [f"number: {phone}" if phone else "", f"mail: {email}" if email else ""]
        bits = [b for b in bits if b]
        if bits:
            joined = "; ".join(bits)
            s += f" {joined[0].upper()}{joined[1:]}."
        s += " No follow-up needed before next month."
        text = s
    elif style == 0:  # hard: a move, with the old employer, city and number as distractors
        old_company = g.company(avoid=(company,))
        old_city = g.city(avoid=(city,))[0]
        old_phone = g.phone()
        if company:
            s = f"Quick update: {name} has left {old_company} and joined {company}"
            s += f" as {a_an(title)} {title}." if title else "."
        else:
            s = f"Quick update: {name} left {old_company} last month and has not named a new employer yet."
            if title:
                s += f" {first} is {a_an(title)} {title} by profession."
        if loc:
            s += f" {first} also moved from {old_city} to {loc}."
        else:
            s += f" {first} has moved away from {old_city}; the new address is unknown."
        if phone:
            s += f" The old number {old_phone} no longer works; the new one is {phone}."
        else:
            s += f" The old number {old_phone} was disconnected and we have no new one."
        s += f" Email: {email}." if email else " We have no email address on file."
        text = s
    else:  # hard: a forwarded request that names another person first
        fwd = g.person(avoid=(name,))
        ff, fl = fwd.split(" ", 1)
        fwd_mail = g.email(ff, fl, g.company(avoid=(company,)))
        s = f"Forwarded by {fwd} ({fwd_mail}):\nPlease add {name} to the CRM."
        if title and company:
            s += f" {first} is the new {title} at {company}."
        elif title:
            s += f" {first} works as {a_an(title)} {title}."
        elif company:
            s += f" {first} has just joined {company}."
        if loc:
            s += f" Based in {loc}."
        if phone:
            s += f" Direct line: {phone}."
        s += f" Email: {email}." if email else f" I couldn't find an email address for {first}."
        text = s
    return text, exp


# ----- order


def gen_order(g: Gen, level: str) -> tuple[str, dict[str, Any]]:
    r = g.r
    oid = g.uid(
        lambda: r.choice(
            [
                f"ORD-{r.randint(10000, 99999)}",
                f"SO-{r.randint(10000, 99999)}",
                f"PO-{r.randint(2023, 2025)}-{r.randint(100, 999)}",
                f"A{r.randint(100000, 999999)}",
            ]
        )
    )
    customer = g.person()
    date = g.date()
    cur = r.choice(CURRENCIES)
    lo, hi = {"easy": (1, 2), "medium": (2, 3), "hard": (2, 3)}[level]
    prods = g.products(r.randint(lo, hi))
    qmax = 6 if level == "easy" else 12
    rows = [(p, r.randint(1, qmax), g.money_cents(2, 150)) for p in prods]
    total = sum(q * c for _, q, c in rows)
    exp = {
        "order_id": oid,
        "customer": customer,
        "order_date": date.isoformat(),
        "items": [{"product": p, "quantity": q, "unit_price": number(c)} for p, q, c in rows],
        "total": number(total),
        "currency": cur,
    }

    def money(c: int) -> str:
        return fmt_money(r, c, cur, level)

    ds = fmt_date(r, date, level)
    style = r.randrange(2)
    if level == "easy" and style == 0:
        items = "; ".join(f"{q} x {p} at {money(c)} each" for p, q, c in rows)
        text = f"Order {oid} was placed by {customer} on {ds}. Items: {items}. Total: {money(total)}."
    elif level == "easy":
        items = join_list([f"{q} × {p} ({money(c)} each)" for p, q, c in rows])
        text = f"{customer} placed order {oid} on {ds}: {items}. The order total is {money(total)}."
    elif level == "medium" and style == 0:
        items = join_list(
            [f"{words(q)} unit{'s' if q > 1 else ''} of {p} at {money(c)} each" for p, q, c in rows]
        )
        text = f"Hi, this is {customer}. On {ds} I placed order {oid}: {items}. I was charged {money(total)} in total."
    elif level == "medium":
        lines = [
            "Order confirmation",
            f"Order no.: {oid}",
            f"Date: {ds}",
            f"Customer: {customer}",
        ]
        lines += [f"- {p} (qty {q}) @ {money(c)}" for p, q, c in rows]
        lines.append(f"Total charged: {money(total)}")
        text = "\n".join(lines)
    elif style == 0:  # hard: an earlier order as a distractor
        old_id = g.uid(lambda: f"ORD-{r.randint(10000, 99999)}")
        old_p = g.products(1)[0]
        items = join_list([f"{words(q) if q < 10 else q} × {p} at {money(c)} apiece" for p, q, c in rows])
        text = (
            f"Hello support, it's {customer}. My earlier order {old_id} ({old_p}, {money(g.money_cents(5, 90))}) "
            f"arrived fine, so this is about the new one, {oid}, placed {ds}. It contains {items}. "
            f"The confirmation shows a total of {money(total)}. Could you tell me when it will ship?"
        )
    else:  # hard: a quantity that was changed before confirmation
        p0, q0, c0 = rows[0]
        before = q0 + r.randint(1, 4)
        rest = [f"{words(q)} × {p} ({money(c)} each)" for p, q, c in rows[1:]]
        text = (
            f"{customer} originally asked for {words(before)} units of {p0} but reduced that to {words(q0)} "
            f"before order {oid} was confirmed on {ds}. Unit price for the {p0}: {money(c0)}. "
            f"The order also includes {join_list(rest)}. Amount charged: {money(total)}."
        )
    return text, exp


# ----- event


def gen_event(g: Gen, level: str) -> tuple[str, dict[str, Any]]:
    r, pn = g.r, NULL_P[level]
    title = " ".join(x for x in (r.choice(EVENT_PREFIX), r.choice(g.p["topic"]), r.choice(EVENT_KIND)) if x)
    date = g.date()
    h = r.randint(8, 20)
    m = r.choice([0, 0, 30, 15, 45] if level == "hard" else [0, 0, 30, 15, 45, 10, 20])
    start = f"{h:02d}:{m:02d}" if r.random() > pn else None
    venue = f"{r.choice(g.p['venue'])} {r.choice(VENUE_KIND)}"
    city = g.city()[0]
    organizer = (g.company() if r.random() < 0.5 else g.person()) if r.random() > pn else None
    capacity = (
        r.choice([r.randint(2, 40) * 10, r.randint(1, 20) * 50, r.randint(20, 120)])
        if r.random() > pn
        else None
    )
    exp = {
        "title": title,
        "date": date.isoformat(),
        "start_time": start,
        "location": {"venue": venue, "city": city},
        "organizer": organizer,
        "capacity": capacity,
    }
    ds = fmt_date(r, date, level)
    ts = fmt_time(r, h, m, level) if start else ""
    style = r.randrange(2)
    if level == "easy":
        if style == 0:
            s = f"The {title} will be held on {ds}" + (f" at {ts}" if start else "")
            s += f" at the {venue} in {city}."
            if organizer:
                s += f" It is organised by {organizer}."
            if capacity:
                s += f" There is room for {capacity} people."
        else:
            lines = [f"Event: {title}", f"Date: {ds}"]
            lines += [f"Time: {ts}"] if start else []
            lines += [f"Venue: {venue}, {city}"]
            lines += [f"Organizer: {organizer}"] if organizer else []
            lines += [f"Capacity: {capacity}"] if capacity else []
            s = "\n".join(lines)
        return s, exp
    if level == "medium":
        if style == 0:
            s = f"Save the date! {title} — {ds}"
            s += f", starting {ts}" if start else ", time to be announced"
            s += f", {venue}, {city}."
            if organizer:
                s += f" Hosted by {organizer}."
            s += f" Capacity: {words(capacity) if capacity < 100 else capacity} seats." if capacity else ""
        else:
            s = f"Reminder: {organizer + ' invites you to' if organizer else 'Join us at'} the {title} in {city}"
            s += f" on {ds}." if not start else f" on {ds} at {ts}."
            s += f" We'll be at the {venue}."
            if capacity:
                s += f" Only {capacity} places are available, so register early."
        return s, exp
    old_date = g.date()
    while old_date == date:
        old_date = g.date()
    old_venue = f"{r.choice(g.p['venue'])} {r.choice(VENUE_KIND)}"
    while old_venue == venue:
        old_venue = f"{r.choice(g.p['venue'])} {r.choice(VENUE_KIND)}"
    if style == 0:
        s = (
            f"Change of plans: the {title}, originally set for {fmt_date(r, old_date, level)} at the {old_venue}, "
            f"will now take place on {ds} at the {venue} in {city}."
        )
        s += f" It starts at {ts}." if start else " The start time has not been fixed yet."
        if organizer:
            s += f" {organizer} is organising it."
        if capacity:
            cap = words(capacity) if capacity % 10 == 0 else str(capacity)
            s += f" Tickets are capped at {cap}; last year's edition drew {capacity + r.randint(15, 300)} people."
    else:
        other = g.company(avoid=(organizer,))
        s = f"{other} will not be running the {title} this year."
        s += (
            f" Instead, {organizer} has taken it over."
            if organizer
            else " A new organiser is still being sought."
        )
        s += f" The event is scheduled for {ds} at the {venue}, {city}"
        s += f", beginning at {ts}." if start else "."
        s += (
            f" Attendance is limited to {capacity} people."
            if capacity
            else " No attendance cap has been set."
        )
    return s, exp


# ----- invoice


def gen_invoice(g: Gen, level: str) -> tuple[str, dict[str, Any]]:
    r, pn = g.r, NULL_P[level]
    vendor = g.company()
    client = g.company(avoid=(vendor,))
    num = g.uid(
        lambda: r.choice(
            [
                f"INV-{r.randint(2023, 2025)}-{r.randint(1, 9999):04d}",
                f"{ascii_fold(vendor)[:3].upper()}-{r.randint(10000, 99999)}",
                f"{r.randint(100000, 999999)}",
            ]
        )
    )
    issue = g.date()
    terms = r.choice([14, 30, 30, 45, 60])
    due = issue + dt.timedelta(days=terms) if r.random() > pn else None
    cur = r.choice(CURRENCIES)
    if level in ("hard", "domain"):
        sub = g.money_cents(80, 9000)
        rate = r.choice([7, 10, 19, 20, 21])
        vat = round(sub * rate / 100)
        total = sub + vat
    else:
        sub = vat = rate = 0
        total = g.money_cents(40, 9000)
    paid = r.random() < 0.45
    exp = {
        "invoice_number": num,
        "vendor": vendor,
        "client": client,
        "issue_date": issue.isoformat(),
        "due_date": due.isoformat() if due else None,
        "total_amount": number(total),
        "currency": cur,
        "paid": paid,
    }

    def money(c: int) -> str:
        return fmt_money(r, c, cur, level)

    iss = fmt_date(r, issue, level)
    dues = fmt_date(r, due, level) if due else ""
    style = r.randrange(2)
    if level == "easy":
        if style == 0:
            s = f"Invoice {num} from {vendor} to {client}. Issued on {iss}" + (
                f", due {dues}." if due else "."
            )
            s += f" Total: {money(total)}. Status: {'paid' if paid else 'unpaid'}."
        else:
            lines = [f"Invoice number: {num}", f"Vendor: {vendor}", f"Client: {client}", f"Date: {iss}"]
            lines += [f"Due date: {dues}"] if due else []
            lines += [f"Amount: {money(total)}", f"Paid: {'yes' if paid else 'no'}"]
            s = "\n".join(lines)
    elif level == "medium":
        if style == 0:
            s = f"{vendor} billed {client} {money(total)} on {iss} (invoice {num})."
            s += f" Payment is due by {dues}." if due else " No due date was given."
            s += " The invoice has been paid in full." if paid else " Payment is still outstanding."
        else:
            s = f"Hi {client} team, attached is invoice {num} dated {iss} for {money(total)}."
            s += f" Please pay by {dues}." if due else ""
            s += " Thanks for the quick payment!" if paid else " We have not received payment yet."
            s += f" Kind regards, {vendor}"
    elif level == "hard":
        old = g.uid(lambda: f"INV-{r.randint(2023, 2025)}-{r.randint(1, 9999):04d}")
        s = (
            f"Dear {client} accounts team, please find attached invoice {num} dated {iss}. "
            f"Subtotal {money(sub)}, VAT ({rate}%) {money(vat)}, total {money(total)}."
        )
        s += f" Please pay by {dues}." if due else " Payment terms will follow separately."
        if paid:
            s += " We have already received your payment for this invoice, thank you."
        else:
            s += f" This invoice is still open; invoice {old} for {money(g.money_cents(50, 900))} was settled last month."
        s += f"\n{vendor}"
    else:  # domain: accounting shorthand, net terms, balance lines
        cs = cur if r.random() < 0.7 else CUR_SYMBOL.get(cur, cur)
        lines = [
            "INVOICE",
            f"Inv. no. {num}",
            f"Supplier: {vendor}",
            f"Bill to: {client}",
            f"Inv. date: {iss}",
        ]
        if due and r.random() < 0.5:
            lines.append(f"Terms: Net {terms}")  # the due date has to be computed
        elif due:
            lines.append(f"Due: {dues}")
        else:
            lines.append("Terms: as per contract")
        lines.append(f"Net amount: {cs} {amount_str(sub)}")
        lines.append(f"VAT {rate}%: {cs} {amount_str(vat)}")
        lines.append(f"Gross total: {cs} {amount_str(total)}")
        lines.append(f"Balance due: {cs} {amount_str(0 if paid else total)}")
        if paid:
            lines.append(r.choice(["Status: PAID", "Paid by bank transfer, thank you.", "Settled in full."]))
        s = "\n".join(lines)
    return s, exp


# ----- prescription

FREQ_WORDS = {1: "once a day", 2: "twice a day", 3: "three times a day", 4: "four times a day"}
FREQ_HOURS = {1: "every 24 hours", 2: "every 12 hours", 3: "every 8 hours", 4: "every 6 hours"}
FREQ_CODES = {1: ["QD", "daily", "q24h"], 2: ["BID", "q12h"], 3: ["TID", "q8h"], 4: ["QID", "q6h"]}
DOSES = [5, 10, 20, 25, 40, 50, 100, 125, 200, 250, 300, 400, 500, 750, 850, 1000]


def gen_prescription(g: Gen, level: str) -> tuple[str, dict[str, Any]]:
    r, pn = g.r, NULL_P[level]
    patient = g.person()
    prescriber = g.person(avoid=(patient,))
    med = r.choice(g.p["medication"])
    dose = r.choice(DOSES)
    tpd = r.randint(1, 4)
    dur = r.choice([5, 7, 7, 10, 14, 14, 21, 28, 30, 90]) if r.random() > pn else None
    refills = r.choice([0, 0, 1, 2, 3, 5]) if r.random() > pn else None
    exp = {
        "patient": patient,
        "prescriber": prescriber,
        "medication": med,
        "dose_mg": dose,
        "times_per_day": tpd,
        "duration_days": dur,
        "refills": refills,
    }
    style = r.randrange(2)
    dr = f"Dr. {prescriber}"
    if level == "easy":
        rf = "" if refills is None else (" No refills." if refills == 0 else f" Refills: {refills}.")
        if style == 0:
            s = f"{dr} prescribed {med} {dose} mg to {patient}, to be taken {FREQ_WORDS[tpd]}"
            s += f" for {dur} days." if dur else "."
            s += rf
        else:
            lines = [f"Patient: {patient}", f"Prescriber: {dr}", f"Medication: {med} {dose} mg"]
            lines += [f"Frequency: {FREQ_WORDS[tpd]}"]
            lines += [f"Duration: {dur} days"] if dur else []
            lines += [f"Refills: {refills}"] if refills is not None else []
            s = "\n".join(lines)
        return s, exp
    if level == "medium":
        dur_s = ""
        if dur:
            dur_s = {7: "one week", 14: "two weeks", 21: "three weeks"}.get(dur, f"{words(dur)} days")
        if style == 0:
            s = f"{patient} should take one {dose} mg tablet of {med} {FREQ_HOURS[tpd]}"
            s += f" for {dur_s}." if dur else " until further notice."
        else:
            s = f"Prescription for {patient}: {med}, {dose} mg, {FREQ_WORDS[tpd]}"
            s += f", for {dur_s}." if dur else "."
        if refills is not None:
            s += (
                " No refills."
                if refills == 0
                else f" May be refilled {words(refills)} time{'s' if refills > 1 else ''}."
            )
        s += f" Signed, {dr}."
        return s, exp
    if level == "hard":
        other = r.choice([x for x in g.p["medication"] if x != med])
        half = dose % 2 == 0 and dose >= 20 and r.random() < 0.5
        unit = f"two {dose // 2} mg tablets" if half else f"one {dose} mg tablet"
        if style == 0:
            s = (
                f"{patient} saw {dr} today. The previous prescription of {other} {r.choice(DOSES)} mg once daily "
                f"was stopped. Instead {patient.split()[0]} will take {unit} of {med} {FREQ_WORDS[tpd]}"
            )
            s += f" for {words(dur)} days." if dur else " with no end date yet."
        else:
            s = (
                f"Per {dr}'s note: {med}, {unit}, {FREQ_HOURS[tpd]}"
                + (f", {words(dur)}-day course." if dur else ", ongoing.")
                + f" Patient: {patient}. The pharmacist, {g.person(avoid=(patient, prescriber))}, checked for interactions."
            )
        if refills is not None:
            s += (
                " Refills: none."
                if refills == 0
                else f" It can be refilled {words(refills)} time{'s' if refills > 1 else ''}."
            )
        return s, exp
    # domain: clinical shorthand
    code = r.choice(FREQ_CODES[tpd])
    dose_s = f"{dose / 1000:g} g" if dose >= 500 and dose % 250 == 0 and r.random() < 0.5 else f"{dose} mg"
    route = r.choice(["PO", "PO", "po"])
    if dur:
        dur_s = r.choice([f"x {dur}d", f"x{dur} days", f"x {dur} days"])
        if dur % 7 == 0 and dur <= 28 and r.random() < 0.4:
            dur_s = f"x {dur // 7} wk" if dur == 7 else f"x {dur // 7} wks"
    else:
        dur_s = r.choice(["ongoing", "long-term", "until review"])
    rf = (
        ""
        if refills is None
        else (r.choice(["NR", "RF: 0", "Refills: 0"]) if refills == 0 else f"RF x{refills}")
    )
    disp = f"Disp #{tpd * (dur or 30)}"
    if style == 0:
        parts = [f"Rx: {med} {dose_s} {route} {code} {dur_s}", disp]
        parts += [rf] if rf else []
        parts += [f"Pt: {patient}", f"Prescriber: {prescriber}, MD"]
        s = ". ".join(parts) + "."
    else:
        s = f"Pt {patient}, seen by {prescriber}, MD. Start {med} {dose_s} {route} {code}, {dur_s}. {disp}."
        s += f" {rf}." if rf else ""
        s += f" Allergies: {r.choice(['NKDA', 'penicillin', 'sulfa'])}."
    return s, exp


# ----- job posting


def gen_job(g: Gen, level: str) -> tuple[str, dict[str, Any]]:
    r, pn = g.r, NULL_P[level]
    title = r.choice(JOB_TITLES)
    company = g.company()
    remote = r.random() < 0.4
    city = g.city()[0] if (not remote or r.random() < 0.5) else None
    cur = r.choice(CURRENCIES)
    salary = None
    lo = hi = 0
    if r.random() > pn:
        lo = r.randint(6, 30) * 5000
        hi = lo if r.random() < 0.2 else lo + r.randint(1, 8) * 5000
        salary = {"min": lo, "max": hi, "currency": cur}
    n_sk = r.randint(1, 3) if level == "easy" else r.randint(2, 4)
    skills = r.sample(SKILLS, n_sk)
    exp = {
        "title": title,
        "company": company,
        "location": city,
        "remote": remote,
        "salary": salary,
        "skills": skills,
    }

    def pay(level_: str) -> str:
        if lo == hi:
            return f"{fmt_money(r, lo * 100, cur, level_)} a year"
        if level_ == "medium" and r.random() < 0.5:
            sym = CUR_SYMBOL.get(cur)
            if sym:
                return f"{sym}{lo // 1000}k–{sym}{hi // 1000}k"
            return f"{lo // 1000}-{hi // 1000}k {cur}"
        return f"{fmt_money(r, lo * 100, cur, level_)} to {fmt_money(r, hi * 100, cur, level_)} per year"

    style = r.randrange(2)
    if level == "easy":
        if remote and city:
            where = f" in {city} (remote work possible)"
        elif remote:
            where = " (fully remote)"
        else:
            where = f" in {city}"
        s = f"{company} is hiring {a_an(title)} {title}{where}."
        if salary:
            s += f" Salary: {pay('easy')}."
        s += f" Required skills: {', '.join(skills)}."
        return s, exp
    if level == "medium":
        if style == 0:
            s = f"We're looking for {a_an(title)} {title} to join {company}!"
            loc_bits = [city] if city else []
            loc_bits += ["remote-friendly"] if remote else ["on-site"]
            s += f"\nLocation: {' / '.join(loc_bits)}"
            s += f"\nPay: {pay('medium')}" if salary else "\nPay: competitive"
            s += f"\nStack: {', '.join(skills)}"
        else:
            s = f"{title} at {company}."
            s += (
                f" Remote{' or from our ' + city + ' office' if city else ' only'}."
                if remote
                else f" Office-based in {city}."
            )
            s += f" Compensation {pay('medium')}." if salary else " Salary depends on experience."
            s += f" You know {join_list(skills)}."
        return s, exp
    # hard: parent company, another opening and a skill that is explicitly not needed
    parent = g.company(avoid=(company,))
    other_title = r.choice([t for t in JOB_TITLES if t != title])
    not_needed = r.choice([k for k in SKILLS if k not in skills])
    other_city = g.city(avoid=(city,))[0]
    s = f"{company}, a subsidiary of {parent}, is looking for {a_an(title)} {title}."
    if remote and city:
        s += f" The role is remote, with an optional desk in our {city} office."
    elif remote:
        s += f" The role is fully remote; our {other_city} headquarters is not involved in hiring."
    else:
        s += f" You'll work on-site in {city}, not at the {other_city} headquarters."
    if salary:
        if lo == hi:
            s += f" The salary is {fmt_money(r, lo * 100, cur, 'hard')} per year."
        else:
            s += f" Pay ranges between {fmt_money(r, lo * 100, cur, 'hard')} and {fmt_money(r, hi * 100, cur, 'hard')} depending on experience."
    else:
        s += " We'll discuss pay during the interview."
    s += f" You should know {join_list(skills[:-1])}; experience with {skills[-1]} is also required."
    s += f" No {not_needed} experience is needed. (We're also hiring {a_an(other_title)} {other_title} separately.)"
    return s, exp


# ----- shipment


def gen_shipment(g: Gen, level: str) -> tuple[str, dict[str, Any]]:
    r = g.r
    letters = "ABCDEFGHJKLMNPRSTUVWXYZ"

    def tn() -> str:
        return r.choice(
            [
                f"{r.choice(letters)}{r.choice(letters)}{r.randint(100000000, 999999999)}{r.choice(['DE', 'GB', 'NL', 'US'])}",
                f"{r.randint(1000000000, 9999999999)}",
                f"{''.join(r.choice(letters) for _ in range(3))}U{r.randint(1000000, 9999999)}",
                f"1Z{r.randint(10**7, 10**8 - 1)}{r.randint(10**7, 10**8 - 1)}",
            ]
        )

    tracking = g.uid(tn)
    carrier = r.choice(CARRIERS)
    o_city, o_country = g.city()
    d_city, d_country = g.city(avoid=(o_city,))
    date = g.date()
    packages = r.randint(1, 8) if level == "easy" else r.randint(1, 40)
    if level == "easy":
        wt10 = r.randint(5, 600)  # tenths of a kg
    else:
        wt10 = r.choice([r.randint(5, 600), r.randint(10, 90) * 1000, r.randint(1, 9) * 10 * 5])
    weight = wt10 // 10 if wt10 % 10 == 0 else wt10 / 10
    exp = {
        "tracking_number": tracking,
        "carrier": carrier,
        "origin": {"city": o_city, "country": o_country},
        "destination": {"city": d_city, "country": d_country},
        "ship_date": date.isoformat(),
        "packages": packages,
        "weight_kg": weight,
    }
    ds = fmt_date(r, date, level)

    def wt(level_: str) -> str:
        if level_ != "easy" and wt10 % 1000 == 0 and wt10 >= 10000 and r.random() < 0.6:
            return f"{wt10 / 10000:g} tonne{'s' if wt10 != 10000 else ''}"
        if level_ != "easy" and wt10 < 10 and r.random() < 0.7:
            return f"{wt10 * 100} g"
        return f"{weight:g} {r.choice(['kg', 'kilograms'] if level_ != 'easy' else ['kg'])}"

    style = r.randrange(2)
    pk = "package" if packages == 1 else "packages"
    if level == "easy":
        if style == 0:
            s = (
                f"Shipment {tracking} was sent with {carrier} from {o_city}, {o_country} to {d_city}, {d_country} "
                f"on {ds}. It contains {packages} {pk} weighing {wt('easy')} in total."
            )
        else:
            s = "\n".join(
                [
                    f"Tracking number: {tracking}",
                    f"Carrier: {carrier}",
                    f"From: {o_city}, {o_country}",
                    f"To: {d_city}, {d_country}",
                    f"Shipped: {ds}",
                    f"Packages: {packages}",
                    f"Weight: {wt('easy')}",
                ]
            )
        return s, exp
    if level == "medium":
        if style == 0:
            s = (
                f"Good news! Your {words(packages)} {pk} left {o_city} ({o_country}) on {ds} with {carrier} "
                f"and {'is' if packages == 1 else 'are'} on the way to {d_city}, {d_country}. "
                f"Tracking no. {tracking}. Total weight: {wt('medium')}."
            )
        else:
            s = (
                f"{carrier} picked up {packages} {pk} ({wt('medium')}) in {o_city}, {o_country} on {ds}. "
                f"Destination: {d_city}, {d_country}. Use {tracking} to track the delivery."
            )
        return s, exp
    if level == "hard":
        via_city, via_country = g.city(avoid=(o_city, d_city))
        ret = g.uid(tn)
        if style == 0:
            s = (
                f"Tracking {tracking}: your consignment of {words(packages)} {pk} ({wt('hard')}) was collected by "
                f"{carrier} in {o_city}, {o_country} on {ds}. It passed through the hub in {via_city}, "
                f"{via_country} and is due in {d_city}, {d_country} soon. A return label ({ret}) is enclosed."
            )
        else:
            s = (
                f"Our previous shipment to {via_city} was delayed, but this one is on time: {packages} {pk} "
                f"weighing {wt('hard')} left {o_city} ({o_country}) on {ds}, bound for {d_city}, {d_country}. "
                f"Carrier: {carrier}, tracking reference {tracking}. Please ignore the old reference {ret}."
            )
        return s, exp
    # domain: freight shorthand with ETA, net weight and shipper/consignee as distractors
    eta = fmt_date(r, date + dt.timedelta(days=r.randint(3, 35)), "domain")
    gross = f"{amount_str(wt10 * 10, ',', '.')} KG" if r.random() < 0.5 else f"{weight:g} KGS"
    net = max(1, int(weight * 0.9))
    unit = r.choice(["PLT", "CTNS", "PKGS", "pcs"])
    shipper = g.company()
    consignee = g.company(avoid=(shipper,))
    if style == 0:
        lines = [
            f"{'AWB' if r.random() < 0.5 else 'B/L'} {tracking}",
            f"Carrier: {carrier}",
            f"Shipper: {shipper}",
            f"Consignee: {consignee}",
            f"POL: {o_city}, {o_country}",
            f"POD: {d_city}, {d_country}",
            f"ETD {ds} / ETA {eta}",
            f"{packages} {unit}, N.W. {net} KG, G.W. {gross}",
        ]
        s = "\n".join(lines)
    else:
        s = (
            f"Booking confirmed with {carrier}. Ref {tracking}. {packages} {unit} ex {o_city} ({o_country}), "
            f"ETD {ds}, ETA {d_city} ({d_country}) {eta}. Gross wt {gross}; net wt {net} KG. "
            f"Shipper {shipper}, consignee {consignee}."
        )
    return s, exp


GENERATORS = {
    "contact": gen_contact,
    "order": gen_order,
    "event": gen_event,
    "invoice": gen_invoice,
    "prescription": gen_prescription,
    "job_posting": gen_job,
    "shipment": gen_shipment,
}

# --------------------------------------------------------------------------- hand-written hard cases
# Written by hand on top of the generated ones; the expected values were worked out by hand
# and tests/test_datasets.py validates them against the schemas. Names come from neither pool.

HANDWRITTEN: list[dict[str, Any]] = [
    {
        "family": "order",
        "text": (
            "Hi! Anneliese Vuković here. Last week (ref. ORD-30517) I bought a Lacquered Fruit Bowl, "
            "but that's all sorted. Today, 2 February 2024, I ordered again, order AX-2291: the item "
            '"Beeswax Tea Light" × a dozen at €1,50 each, and the item "Lacquered Fruit Bowl" × two at '
            "€34,00 apiece. You charged me €86,00, which matches."
        ),
        "expected": {
            "order_id": "AX-2291",
            "customer": "Anneliese Vuković",
            "order_date": "2024-02-02",
            "items": [
                {"product": "Beeswax Tea Light", "quantity": 12, "unit_price": 1.5},
                {"product": "Lacquered Fruit Bowl", "quantity": 2, "unit_price": 34},
            ],
            "total": 86,
            "currency": "EUR",
        },
    },
    {
        "family": "contact",
        "text": (
            "From the conference badge scan: 王芳, Head of Procurement, Hexaplane Materials. Badge city: "
            "Shenzhen, China. The badge also lists her colleague 李伟's number, +86 755 8123 4400, but 王芳's "
            "own phone was not given. Email: wang.fang@hexaplane.cn"
        ),
        "expected": {
            "name": "王芳",
            "job_title": "Head of Procurement",
            "company": "Hexaplane Materials",
            "email": "wang.fang@hexaplane.cn",
            "phone": None,
            "location": {"city": "Shenzhen", "country": "China"},
        },
    },
    {
        "family": "event",
        "text": (
            "The Fjordlight Lantern Walk was postponed twice: first from 14 November 2024 to 21 November 2024, "
            "and then again to 5 December 2024, which is final. We gather at the Old Ropery Pavilion in "
            "Trondheim at a quarter past five in the afternoon. The walk is run by the Nidelva Rowing Club; "
            "we expect about three hundred walkers, but there is no official cap."
        ),
        "expected": {
            "title": "Fjordlight Lantern Walk",
            "date": "2024-12-05",
            "start_time": "17:15",
            "location": {"venue": "Old Ropery Pavilion", "city": "Trondheim"},
            "organizer": "Nidelva Rowing Club",
            "capacity": None,
        },
    },
    {
        "family": "invoice",
        "text": (
            "Rechnung Nr. 2024/0815 — Vendor: Dreiländer Kaffeerösterei GmbH, customer: Pflanzwerk Basel AG. "
            "Invoice date 29.02.2024, payable within 30 days, i.e. by 30.03.2024. Net CHF 1'240.00 plus "
            "8.1% VAT of CHF 100.44 gives CHF 1'340.44. A reminder fee of CHF 20 will apply after the due "
            "date. As of today nothing has been paid."
        ),
        "expected": {
            "invoice_number": "2024/0815",
            "vendor": "Dreiländer Kaffeerösterei GmbH",
            "client": "Pflanzwerk Basel AG",
            "issue_date": "2024-02-29",
            "due_date": "2024-03-30",
            "total_amount": 1340.44,
            "currency": "CHF",
            "paid": False,
        },
    },
    {
        "family": "prescription",
        "text": (
            "Telephone order, read back and confirmed: Mrs. Oyelaran (Folasade Oyelaran) is to start "
            "levetiracetam one point five grams, one tablet morning and one tablet night, for six weeks. "
            "Her sister, also a patient here, takes the same drug at 500 mg. No repeats. Ordered by "
            "Dr. Casimir Wendt."
        ),
        "expected": {
            "patient": "Folasade Oyelaran",
            "prescriber": "Casimir Wendt",
            "medication": "levetiracetam",
            "dose_mg": 1500,
            "times_per_day": 2,
            "duration_days": 42,
            "refills": 0,
        },
    },
    {
        "family": "job_posting",
        "text": (
            "Quillfeather Games (Montevideo) is hiring a Gameplay Programmer. Don't be put off by last "
            "year's ad that said £40k — the band is now £48,000–£56,500. Fully remote; the Montevideo "
            "studio is not hiring for this role. Must-haves: C#, Unity. We do not use Unreal, so no "
            "Unreal experience is needed."
        ),
        "expected": {
            "title": "Gameplay Programmer",
            "company": "Quillfeather Games",
            "location": None,
            "remote": True,
            "salary": {"min": 48000, "max": 56500, "currency": "GBP"},
            "skills": ["C#", "Unity"],
        },
    },
    {
        "family": "shipment",
        "text": (
            "Proof of delivery request. Consignment 7741 0093 2215 left Vilnius, Lithuania on "
            "Friday 3 January 2025 with Baltic Courier Lines — seventeen cartons, 312.4 kg in all. An "
            "earlier consignment of five cartons (48 kg) went to Riga. This one was re-routed from Riga to "
            "Tampere, Finland, where it is expected to be delivered."
        ),
        "expected": {
            "tracking_number": "7741 0093 2215",
            "carrier": "Baltic Courier Lines",
            "origin": {"city": "Vilnius", "country": "Lithuania"},
            "destination": {"city": "Tampere", "country": "Finland"},
            "ship_date": "2025-01-03",
            "packages": 17,
            "weight_kg": 312.4,
        },
    },
    {
        "family": "order",
        "text": (
            "Order no. Q-7781-B (customer Ramón Ibáñez-Quiroga), 29 Dec 2023. Line items: Hand-Thrown "
            "Espresso Cup — 4 pcs @ $18.75; Espresso Saucer — 4 pcs @ $6.25; Gift Wrapping — 1 @ $4.00. "
            "Shipping was free. Grand total $104.00 (a $10 voucher will apply to his next order, not this one)."
        ),
        "expected": {
            "order_id": "Q-7781-B",
            "customer": "Ramón Ibáñez-Quiroga",
            "order_date": "2023-12-29",
            "items": [
                {"product": "Hand-Thrown Espresso Cup", "quantity": 4, "unit_price": 18.75},
                {"product": "Espresso Saucer", "quantity": 4, "unit_price": 6.25},
                {"product": "Gift Wrapping", "quantity": 1, "unit_price": 4},
            ],
            "total": 104,
            "currency": "USD",
        },
    },
    {
        "family": "contact",
        "text": (
            "Hello — this is Siân Ap Rhys-Møller. I'm no longer at Glaswerk Nord; since March I've been "
            "Operations Lead at Tidepool Aquaculture. I still live in Stavanger, Norway. My mobile changed "
            "to +47 412 09 338 (the 900 number on my old card is dead). Best to email me at "
            "sian@tidepool-aqua.no rather than my old work address."
        ),
        "expected": {
            "name": "Siân Ap Rhys-Møller",
            "job_title": "Operations Lead",
            "company": "Tidepool Aquaculture",
            "email": "sian@tidepool-aqua.no",
            "phone": "+47 412 09 338",
            "location": {"city": "Stavanger", "country": "Norway"},
        },
    },
    {
        "family": "event",
        "text": (
            "Ticket office memo: the Eleventh Halvorsund Harp Gathering runs over two days, but only the "
            "opening day matters for this form — Saturday the 8th of March 2025; the opening concert starts "
            "at 7 pm sharp (the bar opens at 6:30 pm). Venue: Kulturhuset Bryggen, Halvorsund. The hall "
            "seats two hundred and forty. "
            "Organiser not yet confirmed."
        ),
        "expected": {
            "title": "Eleventh Halvorsund Harp Gathering",
            "date": "2025-03-08",
            "start_time": "19:00",
            "location": {"venue": "Kulturhuset Bryggen", "city": "Halvorsund"},
            "organizer": None,
            "capacity": 240,
        },
    },
]

# --------------------------------------------------------------------------- assembly


def shingles(text: str, k: int = 5) -> set[str]:
    t = " ".join(text.casefold().split())
    return {t[i : i + k] for i in range(max(1, len(t) - k + 1))}


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def nfc(value: Any) -> Any:
    if isinstance(value, str):
        return unicodedata.normalize("NFC", value)
    if isinstance(value, dict):
        return {k: nfc(v) for k, v in value.items()}
    if isinstance(value, list):
        return [nfc(v) for v in value]
    return value


def make_case(
    cid: str,
    level: str,
    family: str,
    text: str,
    expected: dict[str, Any],
    schema: dict[str, Any] | None = None,
) -> dict[str, Any]:
    tags = [level, family]
    text = re.sub(r"\.\.(?=\s|$)", ".", text)  # "Inc." at the end of a sentence
    schema = SCHEMAS[family] if schema is None else schema
    return nfc({"id": cid, "tags": tags, "text": text, "schema": schema, "expected": expected})


def families_for(level: str) -> tuple[str, ...]:
    return DOMAIN_FAMILIES if level == "domain" else FAMILIES


def build() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    used: set[str] = set()
    test: list[dict[str, Any]] = []
    g = Gen("test", random.Random(f"{SEED}-test"), used)
    for level in LEVELS:
        fams = families_for(level)
        n = N_TEST[level] - (len(HANDWRITTEN) if level == "hard" else 0)
        for i in range(n):
            family = fams[i % len(fams)]
            text, exp = GENERATORS[family](g, level)
            test.append(make_case(f"{level}-{i + 1:03d}", level, family, text, exp))
        if level == "hard":
            for j, hw in enumerate(HANDWRITTEN, start=n + 1):
                case = make_case(f"hard-{j:03d}", "hard", hw["family"], hw["text"], hw["expected"])
                case["tags"].append("handwritten")
                test.append(case)

    test_sh = {}
    for c in test:
        test_sh.setdefault(c["tags"][1], []).append(shingles(c["text"]))
    r = random.Random(f"{SEED}-train")
    g = Gen("train", r, used)
    slots = [
        (level, families_for(level)[i % len(families_for(level))])
        for level in LEVELS
        for i in range(N_TRAIN[level])
    ]
    r.shuffle(slots)
    train: list[dict[str, Any]] = []
    seen_texts: set[str] = {" ".join(c["text"].casefold().split()) for c in test}
    generic = list(sf.TRAIN_FAMILIES)
    pick = random.Random(f"{SEED}-generic")
    for level, family in slots:
        if pick.random() < GENERIC_SHARE:
            fam = generic[len(train) % len(generic)]
            title, fields = sf.TRAIN_FAMILIES[fam]
            text, exp = sf.render(g, sys.modules[__name__], title, fields, level)
            train.append(
                make_case(f"train-{len(train) + 1:04d}", level, fam, text, exp, generic_schema(fields))
            )
            continue
        while True:
            text, exp = GENERATORS[family](g, level)
            norm = " ".join(text.casefold().split())
            sh = shingles(text)
            if norm in seen_texts or any(jaccard(sh, t) >= TRAIN_MAX_JACCARD for t in test_sh[family]):
                continue
            seen_texts.add(norm)
            break
        train.append(make_case(f"train-{len(train) + 1:04d}", level, family, text, exp))
    return test, train


def generic_schema(fields: list[Any]) -> dict[str, Any]:
    return sf.schema_for(fields, sys.modules[__name__])


def build_unseen() -> list[dict[str, Any]]:
    """The unseen-schema cases: families no train row uses, entities from the test pools."""
    g = Gen("test", random.Random(f"{SEED}-unseen"), set())
    cases = []
    for fam, (title, fields) in sf.UNSEEN_FAMILIES.items():
        for level, n in N_UNSEEN_PER_FAMILY.items():
            for _ in range(n):
                text, exp = sf.render(g, sys.modules[__name__], title, fields, level)
                case = make_case(
                    f"unseen-{len(cases) + 1:03d}", level, fam, text, exp, generic_schema(fields)
                )
                case["tags"].append("unseen")
                cases.append(case)
    return cases


def check_pools() -> None:
    for key in POOLS["test"]:
        overlap = [x for x in POOLS["test"][key] if x in POOLS["train"][key]]
        if overlap:
            raise SystemExit(f"pool {key!r} overlaps between test and train: {overlap}")


def write(out: Path) -> None:
    check_pools()
    test, train = build()
    (out / "schemas").mkdir(parents=True, exist_ok=True)
    for fam, schema in SCHEMAS.items():
        (out / "schemas" / f"{fam}.json").write_text(
            json.dumps(schema, indent=2, ensure_ascii=False) + "\n", encoding="utf-8", newline="\n"
        )
    for name, rows in (("cases.jsonl", test), ("train.jsonl", train), ("unseen_cases.jsonl", build_unseen())):
        with open(out / name, "w", encoding="utf-8", newline="\n") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE, help="output directory (default: this folder)")
    args = ap.parse_args(argv)
    write(args.out)


if __name__ == "__main__":
    main()
