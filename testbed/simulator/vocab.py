"""Word lists the simulator draws from: business names, people, time zones, dialogue.

Everything here is invented. Names include non-ASCII letters on purpose: Retell sends
compact JSON with non-ASCII characters unescaped, and signatures are over those bytes.
"""

from __future__ import annotations

from typing import Final

#: (kind of business, service booked, words that fit a branch name)
BUSINESSES: Final = (
    ("Dental", "Cleaning", ("Dental", "Dental Care", "Family Dentistry", "Smile Studio")),
    ("Physio", "Assessment", ("Physiotherapy", "Physio", "Sports Rehab")),
    ("Veterinary", "Check-up", ("Veterinary Clinic", "Animal Hospital", "Vets")),
    ("Salon", "Haircut", ("Hair Studio", "Salon", "Barbers")),
    ("Auto", "Service appointment", ("Auto Repair", "Motors", "Tyre & Service")),
    ("Optician", "Eye test", ("Opticians", "Eye Care", "Vision Centre")),
    ("Legal", "Consultation", ("Law Office", "Legal Advice", "Notary")),
    ("Spa", "Massage", ("Day Spa", "Wellness", "Massage Rooms")),
)

PLACES: Final = (
    "Bayview",
    "Harbor Street",
    "Maple Grove",
    "Riverside",
    "Oakridge",
    "Cedar Park",
    "Northgate",
    "Sunnyvale",
    "Lakeshore",
    "Kingsway",
    "Elm Court",
    "Westfield",
    "Brookside",
    "Hillcrest",
    "Marktplatz",
    "Shibuya",
    "Ginza",
    "Prenzlauer Berg",
    "Schöneberg",
    "Camden",
    "Fitzroy",
    "Ponsonby",
    "Plateau",
    "Bondi",
)

#: Time zones used by `tenants seed`: the first three always appear (far from UTC both
#: ways, and Europe), the rest add half-hour offsets, the southern hemisphere and UTC+0.
#: (IANA name, E.164 country code, area prefixes, national number length)
TIMEZONES: Final = (
    ("America/Los_Angeles", "1", ("415555", "213555", "206555", "503555"), 10),
    ("Europe/Berlin", "49", ("30", "40", "89"), 10),
    ("Asia/Tokyo", "81", ("3", "6"), 9),
    ("America/New_York", "1", ("212555", "617555", "718555"), 10),
    ("Europe/London", "44", ("20",), 10),
    ("Australia/Sydney", "61", ("2",), 9),
    ("Asia/Kolkata", "91", ("22", "80"), 10),
    ("America/St_Johns", "1", ("709555",), 10),
    ("Pacific/Auckland", "64", ("9",), 8),
    ("America/Chicago", "1", ("312555",), 10),
    ("Atlantic/Reykjavik", "354", ("5",), 7),
)
COUNTRY_BY_TIMEZONE: Final = {tz: (cc, prefixes, length) for tz, cc, prefixes, length in TIMEZONES}

DISTRICTS: Final = ("Downtown", "Northside", "West End", "Old Town", "Harbourfront", "Airport")

FIRST_NAMES: Final = (
    "Dana",
    "Sam",
    "Alex",
    "Priya",
    "José",
    "Zoë",
    "Mei",
    "Hiroshi",
    "Lena",
    "Jonas",
    "Fatima",
    "Noah",
    "Aisha",
    "Liam",
    "Chloé",
    "Mateo",
    "Yuki",
    "Sofia",
    "Omar",
    "Grace",
    "Björn",
    "Ana",
    "Kwame",
    "Ingrid",
    "Ravi",
    "Elena",
    "Tom",
    "Nia",
    "Ewa",
    "Kai",
)
LAST_NAMES: Final = (
    "Reyes",
    "Ortiz",
    "Nguyen",
    "Müller",
    "Tanaka",
    "Smith",
    "Okafor",
    "Kowalski",
    "García",
    "Schmidt",
    "Sato",
    "Brown",
    "Patel",
    "Dubois",
    "Rossi",
    "Lindqvist",
    "O'Brien",
    "Haddad",
    "Kim",
    "Novak",
    "Silva",
    "Weber",
    "Yamamoto",
    "Ahmed",
)
EMAIL_DOMAINS: Final = ("example.com", "example.org", "example.net")

REASONS: Final = (
    "I'd like to book an appointment for next week.",
    "Can I move my appointment to Thursday?",
    "What are your opening hours on Saturday?",
    "I need to cancel my booking, something came up.",
    "Do you have anything free tomorrow morning?",
    "Is there parking near the clinic?",
    "I was charged twice on my last visit.",
    "Can I speak to someone about my results?",
    "How much does a first visit cost?",
    "I'm running ten minutes late for my appointment.",
)
SMALL_TALK: Final = (
    ("Could you spell your last name for me?", "Sure, it's exactly as on my card."),
    ("Is this the best number to reach you on?", "Yes, this one is fine."),
    ("Do you have a preference for morning or afternoon?", "Mornings are better for me."),
    ("Have you visited us before?", "Yes, a couple of times last year."),
    ("Would you like a text reminder?", "Yes please, that would help."),
    ("Anything else I can note for the team?", "Just that I prefer the quiet room."),
    ("Shall I check the next available slot?", "Yes, the earliest one you have."),
)
SUMMARIES: Final = (
    "Caller asked about availability and was offered the next free slot.",
    "Caller wanted to change an existing appointment.",
    "Caller asked about prices and opening hours.",
    "Caller reported a billing problem; agent promised a call back.",
    "Caller booked an appointment with the agent.",
)
CANCEL_REASONS: Final = ("Feeling unwell", "Schedule conflict", "Found another provider", "")
REJECT_REASONS: Final = ("Practitioner unavailable that day", "Outside opening hours")
RESCHEDULE_REASONS: Final = ("Work conflict", "Childcare", "Travel")
