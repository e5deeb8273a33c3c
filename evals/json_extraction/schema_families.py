"""Generic schema families for the JSON-extraction data: many schemas, one renderer.

The seven hand-built families of ``generate.py`` teach seven templates; these
families (41 for training, 10 held out for ``unseen_cases.jsonl``) teach the
mapping itself: read a schema never seen before and fill it from the text.
Each family is a list of fields; a record is sampled field by field and the
text is rendered from it (labelled lines, a run-on note, or sentences with a
corrected distractor), so ``expected`` is right by construction. A field is
``(key, kind, labels, optional, params)``; an optional field is nullable and
left out of the text when it is null.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

Field = tuple[str, str, tuple[str, ...], bool, dict[str, Any]]


def f(key: str, kind: str, *labels: str, opt: bool = False, **params: Any) -> Field:
    """One field: its JSON key, kind, the words the text may use for it, whether it may be null."""
    return (key, kind, labels or (key.replace("_", " "),), opt, params)


def code(pattern: str) -> dict[str, Any]:
    return {"pattern": pattern}


GENRES = ["thriller", "biography", "fantasy", "history", "poetry", "science fiction", "cookbook", "travel"]
ROOMS = ["single", "double", "twin", "suite", "family room"]
SEATS = ["economy", "premium economy", "business", "first"]
CAR_CLASSES = ["compact", "sedan", "SUV", "van", "convertible"]
FUELS = ["petrol", "diesel", "electric", "hybrid"]
PRIORITIES = ["low", "medium", "high", "urgent"]
SPECIES = ["dog", "cat", "rabbit", "parrot", "guinea pig"]
PLANS = ["basic", "standard", "premium", "family"]
SPORTS = ["football", "basketball", "handball", "volleyball", "hockey"]
CONDITIONS = ["sunny", "cloudy", "rain", "snow", "fog", "windy"]
COLOURS = ["red", "blue", "silver", "black", "white", "green"]
DISHES = ["pasta", "soup", "curry", "salad", "risotto", "stew", "pie", "tacos"]
INGREDIENTS = [
    "garlic",
    "onion",
    "tomato",
    "rice",
    "lentils",
    "spinach",
    "ginger",
    "lemon",
    "basil",
    "potato",
]
AMENITIES = ["balcony", "parking", "elevator", "garden", "dishwasher", "washing machine", "fireplace"]
LANGS = ["English", "Spanish", "French", "German", "Portuguese", "Japanese", "Arabic", "Italian"]
SYMPTOMS = ["fever", "cough", "headache", "rash", "fatigue", "nausea", "sore throat"]
VACCINES = ["influenza", "hepatitis B", "tetanus", "measles", "yellow fever", "COVID-19"]
FAULTS = ["flat tyre", "broken chain", "worn brakes", "bent wheel", "loose pedal", "gear slipping"]
SECTIONS = ["A", "B", "C", "D", "E", "F"]

TRAIN_FAMILIES: dict[str, tuple[str, list[Field]]] = {
    "book": (
        "Book record",
        [
            f("title", "title"),
            f("author", "person", "author", "written by"),
            f("genre", "choice", "genre", choices=GENRES),
            f("pages", "int", "pages", "page count", lo=90, hi=900),
            f("published", "date", "published", "publication date", opt=True),
        ],
    ),
    "movie_ticket": (
        "Cinema ticket",
        [
            f("film", "title", "film", "movie"),
            f("cinema", "venue", "cinema"),
            f("date", "date", "date", "screening date"),
            f("start_time", "time", "start", "showtime"),
            f("seats", "int", "seats", "tickets", lo=1, hi=6),
            f("row", "choice", "row", choices=SECTIONS),
        ],
    ),
    "recipe": (
        "Recipe card",
        [
            f("dish", "choice", "dish", choices=DISHES),
            f("servings", "int", "serves", "servings", lo=1, hi=8),
            f("prep_minutes", "int", "prep time in minutes", "minutes to prepare", lo=5, hi=90),
            f("ingredients", "list", "ingredients", "you need", choices=INGREDIENTS),
            f("vegetarian", "bool", yes="vegetarian", no="not vegetarian"),
        ],
    ),
    "hotel_booking": (
        "Hotel booking",
        [
            f("guest", "person", "guest", "booked by"),
            f("hotel", "venue", "hotel"),
            f("city", "city", "city"),
            f("check_in", "date", "check-in", "arrival"),
            f("nights", "int", "nights", lo=1, hi=14),
            f("room_type", "choice", "room", choices=ROOMS),
            f("breakfast", "bool", yes="breakfast included", no="room only, no breakfast"),
        ],
    ),
    "flight": (
        "Flight booking",
        [
            f("passenger", "person", "passenger"),
            f("flight_number", "code", "flight", "flight number", **code("??###")),
            f("from_city", "city", "from", "departing from"),
            f("to_city", "city", "to", "arriving in"),
            f("date", "date", "date", "departure date"),
            f("seat_class", "choice", "class", "cabin", choices=SEATS),
        ],
    ),
    "car_rental": (
        "Car rental",
        [
            f("driver", "person", "driver", "renter"),
            f("pickup_date", "date", "pick-up"),
            f("return_date", "date", "return", "drop-off"),
            f("car_class", "choice", "car class", "vehicle", choices=CAR_CLASSES),
            f("daily_rate", "money", "daily rate", "per day", lo=25, hi=190),
            f("currency", "currency"),
            f("insurance", "bool", yes="full insurance", no="no insurance"),
        ],
    ),
    "apartment_listing": (
        "Apartment for rent",
        [
            f("city", "city", "city"),
            f("rooms", "int", "rooms", lo=1, hi=6),
            f("area_m2", "int", "area in m2", "square metres", lo=25, hi=180),
            f("rent", "money", "rent", "monthly rent", lo=400, hi=3900),
            f("currency", "currency"),
            f("amenities", "list", "features", "amenities", choices=AMENITIES),
            f("available_from", "date", "available from", opt=True),
        ],
    ),
    "used_car": (
        "Car for sale",
        [
            f("make", "company", "make", "manufacturer"),
            f("year", "int", "year", lo=2005, hi=2024),
            f("mileage_km", "int", "mileage in km", "km on the clock", lo=5000, hi=240000),
            f("fuel", "choice", "fuel", choices=FUELS),
            f("colour", "choice", "colour", choices=COLOURS),
            f("price", "money", "price", "asking price", lo=1500, hi=45000),
            f("currency", "currency"),
        ],
    ),
    "restaurant_reservation": (
        "Table reservation",
        [
            f("name", "person", "name", "reserved for"),
            f("restaurant", "venue", "restaurant"),
            f("date", "date", "date"),
            f("time", "time", "time"),
            f("party_size", "int", "party size", "guests", lo=1, hi=12),
            f(
                "notes",
                "choice",
                "notes",
                opt=True,
                choices=["window seat", "birthday", "high chair", "quiet table"],
            ),
        ],
    ),
    "gym_membership": (
        "Gym membership",
        [
            f("member", "person", "member"),
            f("member_id", "code", "member id", **code("GM-#####")),
            f("plan", "choice", "plan", choices=PLANS),
            f("start_date", "date", "start date", "starts"),
            f("monthly_fee", "money", "monthly fee", lo=15, hi=120),
            f("currency", "currency"),
        ],
    ),
    "course_enrollment": (
        "Course enrolment",
        [
            f("student", "person", "student"),
            f("course", "title", "course"),
            f("course_code", "code", "course code", **code("???-###")),
            f("credits", "int", "credits", "ECTS", lo=2, hi=10),
            f("start_date", "date", "start date"),
            f("online", "bool", yes="taught online", no="taught on campus"),
        ],
    ),
    "library_loan": (
        "Library loan",
        [
            f("borrower", "person", "borrower"),
            f("book_title", "title", "book", "title"),
            f("barcode", "code", "barcode", **code("########")),
            f("due_date", "date", "due", "due date"),
            f("renewals", "int", "renewals", "times renewed", lo=0, hi=3),
        ],
    ),
    "parcel_return": (
        "Return request",
        [
            f("customer", "person", "customer"),
            f("order_number", "code", "order", "order number", **code("R#######")),
            f("item", "product", "item", "product"),
            f(
                "reason",
                "choice",
                "reason",
                choices=["damaged", "wrong size", "not as described", "arrived late"],
            ),
            f("refund", "money", "refund", "refund amount", lo=5, hi=400),
            f("currency", "currency"),
        ],
    ),
    "bank_transfer": (
        "Bank transfer",
        [
            f("sender", "person", "from", "sender"),
            f("recipient", "person", "to", "recipient"),
            f("amount", "money", "amount", lo=20, hi=9000),
            f("currency", "currency"),
            f("date", "date", "date", "value date"),
            f("reference", "code", "reference", **code("TRX-######")),
        ],
    ),
    "insurance_claim": (
        "Insurance claim",
        [
            f("claimant", "person", "claimant", "policyholder"),
            f("policy_number", "code", "policy", "policy number", **code("PN-########")),
            f("incident_date", "date", "incident date", "date of loss"),
            f("claim_amount", "money", "claim", "amount claimed", lo=100, hi=20000),
            f("currency", "currency"),
            f("approved", "bool", yes="approved", no="not approved yet"),
        ],
    ),
    "support_ticket": (
        "Support ticket",
        [
            f("ticket_id", "code", "ticket", **code("TCK-#####")),
            f("customer", "person", "customer", "reported by"),
            f("product", "product", "product"),
            f("priority", "enum", "priority", choices=PRIORITIES),
            f("opened", "date", "opened"),
            f("resolved", "bool", yes="resolved", no="still open"),
        ],
    ),
    "bug_report": (
        "Bug report",
        [
            f("bug_id", "code", "bug", "issue", **code("BUG-####")),
            f("reporter", "person", "reporter"),
            f(
                "component",
                "choice",
                "component",
                choices=["login", "search", "checkout", "billing", "export", "settings"],
            ),
            f("severity", "enum", "severity", choices=PRIORITIES),
            f("version", "code", "version", **code("#.#.#")),
            f("reproducible", "bool", yes="reproducible", no="cannot reproduce"),
        ],
    ),
    "meeting": (
        "Meeting invite",
        [
            f("topic", "topic", "topic", "subject"),
            f("organizer", "person", "organizer", "host"),
            f("date", "date", "date"),
            f("start_time", "time", "start", "at"),
            f("duration_min", "int", "duration in minutes", "minutes", lo=15, hi=120),
            f("room", "code", "room", opt=True, **code("?-###")),
        ],
    ),
    "conference_talk": (
        "Talk proposal",
        [
            f("speaker", "person", "speaker"),
            f("talk_title", "topic", "talk", "title"),
            f("track", "choice", "track", choices=["main", "workshop", "lightning"]),
            f("minutes", "int", "length in minutes", lo=5, hi=60),
            f("company", "company", "company", opt=True),
        ],
    ),
    "concert_ticket": (
        "Concert ticket",
        [
            f("artist", "person", "artist", "performer"),
            f("venue", "venue", "venue"),
            f("date", "date", "date"),
            f("section", "choice", "section", "block", choices=SECTIONS),
            f("price", "money", "price", lo=20, hi=250),
            f("currency", "currency"),
        ],
    ),
    "train_ticket": (
        "Train ticket",
        [
            f("passenger", "person", "passenger"),
            f("from_station", "city", "from"),
            f("to_station", "city", "to"),
            f("date", "date", "date", "travel date"),
            f("departure", "time", "departs", "departure"),
            f("coach", "int", "coach", "car", lo=1, hi=14),
            f("seat", "int", "seat", lo=1, hi=88),
        ],
    ),
    "doctor_appointment": (
        "Appointment",
        [
            f("patient", "person", "patient"),
            f("doctor", "person", "doctor", "with"),
            f("date", "date", "date"),
            f("time", "time", "time"),
            f("reason", "choice", "reason", choices=SYMPTOMS),
            f("first_visit", "bool", yes="first visit", no="follow-up"),
        ],
    ),
    "vaccination": (
        "Vaccination record",
        [
            f("person", "person", "name", "patient"),
            f("vaccine", "choice", "vaccine", choices=VACCINES),
            f("dose_number", "int", "dose", "dose number", lo=1, hi=4),
            f("date", "date", "date", "given on"),
            f("clinic", "venue", "clinic", "site"),
        ],
    ),
    "pet_adoption": (
        "Adoption form",
        [
            f("adopter", "person", "adopter"),
            f("pet_name", "first", "pet", "pet name"),
            f("species", "choice", "species", "animal", choices=SPECIES),
            f("age_years", "int", "age", "age in years", lo=1, hi=14),
            f("fee", "money", "fee", "adoption fee", lo=0, hi=300),
            f("currency", "currency"),
            f("neutered", "bool", yes="neutered", no="not neutered"),
        ],
    ),
    "vet_visit": (
        "Vet visit",
        [
            f("owner", "person", "owner"),
            f("pet_name", "first", "pet"),
            f("species", "choice", "species", choices=SPECIES),
            f("weight_kg", "num", "weight", "weighs", lo=1, hi=45, unit="kg"),
            f("visit_date", "date", "visit date", "seen on"),
            f("next_visit", "date", "next visit", opt=True),
        ],
    ),
    "product_review": (
        "Review",
        [
            f("reviewer", "person", "reviewer", "review by"),
            f("product", "product", "product"),
            f("rating", "int", "rating", "stars", lo=1, hi=5),
            f("date", "date", "date"),
            f("recommends", "bool", yes="would recommend", no="would not recommend"),
        ],
    ),
    "subscription": (
        "Subscription",
        [
            f("subscriber", "person", "subscriber"),
            f("service", "company", "service"),
            f("plan", "choice", "plan", "tier", choices=PLANS),
            f("price", "money", "price", "monthly price", lo=3, hi=60),
            f("currency", "currency"),
            f("renews", "date", "renews on", "next renewal"),
            f("auto_renew", "bool", yes="auto-renew on", no="auto-renew off"),
        ],
    ),
    "utility_bill": (
        "Utility bill",
        [
            f("account", "code", "account", "account number", **code("AC-#######")),
            f("customer", "person", "customer"),
            f("usage_kwh", "int", "usage in kWh", "consumption", lo=50, hi=2400),
            f("amount_due", "money", "amount due", "to pay", lo=20, hi=600),
            f("currency", "currency"),
            f("due_date", "date", "due date", "pay by"),
        ],
    ),
    "job_application": (
        "Application",
        [
            f("applicant", "person", "applicant", "candidate"),
            f("position", "jobtitle", "position", "role"),
            f("company", "company", "company"),
            f("applied_on", "date", "applied on", "date"),
            f("years_experience", "int", "years of experience", lo=0, hi=25),
            f("languages", "list", "languages", "speaks", choices=LANGS),
        ],
    ),
    "employee_record": (
        "Employee record",
        [
            f("employee", "person", "employee", "name"),
            f("employee_id", "code", "employee id", "staff number", **code("E-#####")),
            f(
                "department",
                "choice",
                "department",
                choices=["finance", "sales", "legal", "IT", "operations"],
            ),
            f("start_date", "date", "start date", "joined"),
            f("manager", "person", "manager", "reports to", opt=True),
        ],
    ),
    "payslip": (
        "Payslip",
        [
            f("employee", "person", "employee"),
            f("period_end", "date", "period end", "pay date"),
            f("gross", "money", "gross", "gross pay", lo=1200, hi=9000),
            f("net", "money", "net", "net pay", lo=900, hi=6000),
            f("currency", "currency"),
            f("hours", "int", "hours", "hours worked", lo=40, hi=200),
        ],
    ),
    "expense_report": (
        "Expense claim",
        [
            f("employee", "person", "employee", "claimed by"),
            f("merchant", "company", "merchant", "paid to"),
            f("amount", "money", "amount", lo=5, hi=1500),
            f("currency", "currency"),
            f("date", "date", "date", "spent on"),
            f("category", "choice", "category", choices=["travel", "meals", "hotel", "software"]),
        ],
    ),
    "property_sale": (
        "Property sale",
        [
            f("seller", "person", "seller"),
            f("buyer", "person", "buyer"),
            f("city", "city", "city"),
            f("price", "money", "price", "sale price", lo=90000, hi=950000),
            f("currency", "currency"),
            f("bedrooms", "int", "bedrooms", lo=1, hi=6),
            f("completion", "date", "completion", "completion date"),
        ],
    ),
    "weather_report": (
        "Weather",
        [
            f("city", "city", "city"),
            f("date", "date", "date"),
            f("condition", "choice", "conditions", "sky", choices=CONDITIONS),
            f("high_c", "int", "high", "maximum", lo=-5, hi=38),
            f("low_c", "int", "low", "minimum", lo=-15, hi=20),
            f("wind_kmh", "int", "wind in km/h", "wind", opt=True, lo=0, hi=90),
        ],
    ),
    "sports_match": (
        "Match report",
        [
            f("sport", "choice", "sport", choices=SPORTS),
            f("home_team", "city", "home", "home team"),
            f("away_team", "city", "away", "visitors"),
            f("home_score", "int", "home score", lo=0, hi=9),
            f("away_score", "int", "away score", lo=0, hi=9),
            f("date", "date", "date", "played on"),
            f("attendance", "int", "attendance", "crowd", opt=True, lo=500, hi=60000),
        ],
    ),
    "race_result": (
        "Race result",
        [
            f("runner", "person", "runner", "athlete"),
            f("bib", "int", "bib", "bib number", lo=1, hi=9999),
            f("city", "city", "race city"),
            f("distance_km", "num", "distance", lo=5, hi=42, unit="km"),
            f("place", "int", "place", "finished", lo=1, hi=800),
            f("date", "date", "date", "race day"),
        ],
    ),
    "volunteer_signup": (
        "Volunteer sign-up",
        [
            f("volunteer", "person", "volunteer"),
            f("email", "email", "email"),
            f("shift_date", "date", "shift", "shift date"),
            f("hours", "int", "hours", lo=1, hi=8),
            f("has_car", "bool", yes="has a car", no="no car"),
            f("phone", "phone", "phone", opt=True),
        ],
    ),
    "loan_application": (
        "Loan application",
        [
            f("applicant", "person", "applicant"),
            f("amount", "money", "amount", "loan amount", lo=1000, hi=60000),
            f("currency", "currency"),
            f("term_months", "int", "term in months", "months", lo=6, hi=84),
            f("employer", "company", "employer", "works at", opt=True),
            f("submitted", "date", "submitted", "date"),
        ],
    ),
    "wine": (
        "Wine list entry",
        [
            f("producer", "company", "producer", "winery"),
            f("vintage", "int", "vintage", lo=1995, hi=2023),
            f("region", "city", "region", "from"),
            f("colour", "choice", "colour", choices=["red", "white", "rosé"]),
            f("price", "money", "price", "bottle price", lo=8, hi=180),
            f("currency", "currency"),
        ],
    ),
    "laptop_spec": (
        "Laptop listing",
        [
            f("brand", "company", "brand", "made by"),
            f("ram_gb", "int", "RAM in GB", "memory", lo=4, hi=64),
            f("storage_gb", "int", "storage in GB", "disk", lo=128, hi=4000),
            f("screen_inches", "num", "screen", "display", lo=11, hi=17, unit="inch"),
            f("price", "money", "price", lo=250, hi=3200),
            f("currency", "currency"),
        ],
    ),
    "domain_renewal": (
        "Domain renewal",
        [
            f("domain", "domain", "domain"),
            f("owner", "person", "owner", "registrant"),
            f("expires", "date", "expires", "expiry"),
            f("years", "int", "years", "renewed for", lo=1, hi=5),
            f("price", "money", "price", "cost", lo=8, hi=90),
            f("currency", "currency"),
        ],
    ),
}

UNSEEN_FAMILIES: dict[str, tuple[str, list[Field]]] = {
    "scholarship": (
        "Scholarship award",
        [
            f("student", "person", "student", "awarded to"),
            f("university", "company", "university"),
            f("amount", "money", "amount", "award", lo=500, hi=25000),
            f("currency", "currency"),
            f("year", "int", "academic year", "year", lo=2023, hi=2027),
            f("renewable", "bool", yes="renewable", no="one-off, not renewable"),
        ],
    ),
    "boat_charter": (
        "Boat charter",
        [
            f("skipper", "person", "skipper", "captain"),
            f("boat", "title", "boat", "vessel"),
            f("harbour", "city", "harbour", "departs from"),
            f("date", "date", "date"),
            f("passengers", "int", "passengers", "people on board", lo=1, hi=12),
            f("fuel_included", "bool", yes="fuel included", no="fuel extra"),
        ],
    ),
    "lab_result": (
        "Lab result",
        [
            f("patient", "person", "patient"),
            f("test", "choice", "test", choices=["glucose", "cholesterol", "ferritin", "vitamin D", "TSH"]),
            f("value", "num", "value", "result", lo=1, hi=300, unit="units"),
            f("sampled", "date", "sampled", "sample date"),
            f("abnormal", "bool", yes="flagged abnormal", no="within range"),
        ],
    ),
    "parking_fine": (
        "Parking notice",
        [
            f("notice_number", "code", "notice", "notice number", **code("PCN-######")),
            f("plate", "code", "plate", "registration", **code("??## ???")),
            f("city", "city", "city"),
            f("date", "date", "date", "issued"),
            f("fine", "money", "fine", lo=20, hi=180),
            f("currency", "currency"),
        ],
    ),
    "museum_booking": (
        "Museum booking",
        [
            f("visitor", "person", "visitor", "booked by"),
            f("museum", "venue", "museum"),
            f("date", "date", "date", "visit date"),
            f("time_slot", "time", "slot", "entry time"),
            f("adults", "int", "adults", lo=1, hi=6),
            f("children", "int", "children", "kids", lo=0, hi=5),
        ],
    ),
    "software_license": (
        "License",
        [
            f("licensee", "company", "licensee", "licensed to"),
            f("license_key", "code", "key", "license key", **code("????-####-????")),
            f("seats", "int", "seats", "users", lo=1, hi=500),
            f("expires", "date", "expires", "valid until"),
            f("price", "money", "price", lo=49, hi=9000),
            f("currency", "currency"),
        ],
    ),
    "wedding_rsvp": (
        "RSVP",
        [
            f("guest", "person", "guest", "from"),
            f("attending", "bool", yes="will attend", no="cannot attend"),
            f("plus_ones", "int", "plus ones", "extra guests", lo=0, hi=3),
            f("meal", "choice", "meal", "menu", choices=["fish", "meat", "vegetarian", "vegan"]),
            f("phone", "phone", "phone", opt=True),
        ],
    ),
    "warranty_claim": (
        "Warranty claim",
        [
            f("customer", "person", "customer"),
            f("product", "product", "product"),
            f("serial", "code", "serial", "serial number", **code("SN########")),
            f("purchased", "date", "purchased", "bought on"),
            f(
                "fault",
                "choice",
                "fault",
                "problem",
                choices=["no power", "cracked screen", "overheating", "noisy fan"],
            ),
            f("under_warranty", "bool", yes="under warranty", no="warranty expired"),
        ],
    ),
    "bike_repair": (
        "Repair ticket",
        [
            f("owner", "person", "owner", "customer"),
            f("bike", "company", "bike", "brand"),
            f("fault", "choice", "fault", "issue", choices=FAULTS),
            f("drop_off", "date", "dropped off"),
            f("estimate", "money", "estimate", "quote", lo=10, hi=250),
            f("currency", "currency"),
        ],
    ),
    "art_auction": (
        "Auction lot",
        [
            f("lot", "int", "lot", "lot number", lo=1, hi=400),
            f("artist", "person", "artist"),
            f("title", "title", "title", "work"),
            f("year", "int", "year", "painted in", lo=1880, hi=2020),
            f("hammer_price", "money", "hammer price", "sold for", lo=500, hi=250000),
            f("currency", "currency"),
        ],
    ),
}


# --------------------------------------------------------------------------- schema and sampling


def schema_for(fields: list[Field], t: ModuleType) -> dict[str, Any]:
    """The family's closed schema (the same shape as the hand-built ones)."""
    props: dict[str, Any] = {}
    for key, kind, _, opt, params in fields:
        if kind == "currency":
            s: dict[str, Any] = dict(t.CURRENCY)
        elif kind == "enum":
            s = {"type": "string", "enum": list(params["choices"])}
        elif kind == "list":
            s = {"type": "array", "items": {"type": "string"}}
        else:
            base = {"int": "integer", "num": "number", "money": "number", "bool": "boolean"}.get(
                kind, "string"
            )
            s = {"type": base}
            if kind == "date":
                s["format"] = "date"
            if kind == "time":
                s["pattern"] = t.NTIME["pattern"]
        if opt:
            s["type"] = [s["type"], "null"]
            if "enum" in s:
                s["enum"] = [*s["enum"], None]
        props[key] = s
    return t.obj(props)


def _code(g: Any, pattern: str) -> str:
    r = g.r
    return g.uid(
        lambda: "".join(
            str(r.randint(0, 9)) if c == "#" else chr(r.randint(65, 90)) if c == "?" else c for c in pattern
        )
    )


def sample(g: Any, t: ModuleType, fields: list[Field], level: str) -> tuple[dict[str, Any], dict[str, str]]:
    """A record (the label) and each non-null field's rendering in the text."""
    r = g.r
    cur = r.choice(t.CURRENCIES)
    exp: dict[str, Any] = {}
    shown: dict[str, str] = {}
    for key, kind, _, opt, p in fields:
        if kind == "currency":
            exp[key] = cur
            continue
        if opt and r.random() < t.NULL_P[level] + 0.15:
            exp[key] = None
            continue
        if kind == "person":
            v = g.person(tuple(x for x in exp.values() if isinstance(x, str) and " " in x))
            s = v
        elif kind == "first":
            v = s = g.name_parts()[0]
        elif kind == "company":
            v = s = g.company()
        elif kind == "city":
            v = s = g.city(tuple(exp.values()))[0]
        elif kind == "venue":
            v = s = f"{r.choice(g.p['venue'])} {r.choice(t.VENUE_KIND)}"
        elif kind == "title":
            v = s = f"The {r.choice(g.p['product_adj'])} {r.choice(t.PRODUCT_NOUN)}"
        elif kind == "topic":
            v = s = (
                f"{r.choice(g.p['topic'])} {r.choice(['Review', 'Update', 'Basics', 'Planning', 'Deep Dive'])}"
            )
        elif kind == "product":
            v = s = g.products(1)[0]
        elif kind == "jobtitle":
            v = s = r.choice(t.JOB_TITLES)
        elif kind == "domain":
            v = s = t.ascii_fold(r.choice(g.p["company"])) + r.choice([".com", ".org", ".io", ".net"])
        elif kind in ("choice", "enum"):
            v = s = r.choice(p["choices"])
        elif kind == "code":
            v = s = _code(g, p["pattern"])
        elif kind == "int":
            v = r.randint(p["lo"], p["hi"])
            s = t.words(v) if level != "easy" and 0 < v <= 20 and r.random() < 0.3 else str(v)
        elif kind == "num":
            v = round(r.uniform(p["lo"], p["hi"]), r.choice([0, 1]))
            v = int(v) if v == int(v) else v
            s = f"{v} {p['unit']}"
        elif kind == "money":
            cents = g.money_cents(p["lo"], p["hi"]) if p["hi"] > 0 else 0
            v, s = t.number(cents), t.fmt_money(r, cents, cur, level)
        elif kind == "date":
            d = g.date()
            v, s = d.isoformat(), t.fmt_date(r, d, level)
        elif kind == "time":
            h, m = r.randint(7, 21), r.choice([0, 0, 15, 30, 45])
            v, s = f"{h:02d}:{m:02d}", t.fmt_time(r, h, m, level)
        elif kind == "bool":
            v = r.random() < 0.5
            s = p["yes"] if v else p["no"]
        elif kind == "email":
            first, last = g.name_parts()
            v = s = g.email(first, last, None)
        elif kind == "phone":
            v = s = g.phone()
        elif kind == "list":
            v = r.sample(p["choices"], r.randint(1, 3))
            s = t.join_list(v)
        else:  # pragma: no cover - a typo in a family
            raise ValueError(f"unknown field kind {kind!r}")
        exp[key], shown[key] = v, s
    return exp, shown


def render(g: Any, t: ModuleType, title: str, fields: list[Field], level: str) -> tuple[str, dict[str, Any]]:
    """(text, expected) for one record, in a style that suits the level."""
    r = g.r
    exp, shown = sample(g, t, fields, level)
    parts = []
    for key, kind, labels, _, _ in fields:
        if key not in shown:
            continue
        label = r.choice(labels)
        parts.append(
            (
                kind,
                shown[key] if kind == "bool" else f"{label}: {shown[key]}",
                shown[key] if kind == "bool" else f"{label} {shown[key]}",
            )
        )
    style = {"easy": 0, "medium": r.choice([0, 1]), "hard": r.choice([1, 2]), "domain": 2}[level]
    if style == 0:
        return "\n".join([title] + [line for _, line, _ in parts]), exp
    if level != "easy":
        r.shuffle(parts)
    if style == 1:
        return f"{title} - " + "; ".join(phrase for _, _, phrase in parts) + ".", exp
    sentences = [phrase[0].upper() + phrase[1:] + "." for _, _, phrase in parts]
    # A corrected distractor: an earlier value of a field, explicitly replaced (never the answer).
    numeric = [(k, lab) for k, kind, lab, _, _ in fields if kind == "int" and isinstance(exp.get(k), int)]
    if numeric:
        key, labels = r.choice(numeric)
        old = exp[key] + r.choice([-2, -1, 1, 2, 3])
        sentences.insert(
            r.randrange(len(sentences) + 1),
            f"(Earlier the {labels[0]} was given as {old}; that was corrected to the figure here.)",
        )
    return f"{title}. " + " ".join(sentences), exp
