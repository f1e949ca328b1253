"""Procedurally generated fictional worlds, their passages, questions and the passage reader.

A world is a few people, cities and companies with typed attributes (a profession, a year, a
country, an industry) and functional relations (born in, works for, based in, founded by, mayor
of). Every entity is written out as one passage: its name as the title, one sentence per fact,
each sentence drawn from a couple of paraphrases. Names come from fixed made-up pools, so the
language is a small closed vocabulary (:data:`VOCABULARY`) that no pretrained model has seen
facts about, while which fact holds in which world is fresh for every seed.

A question follows a chain from a named head entity: ``hops - 1`` relations, then one field of
the last entity (an attribute or a relation). Its gold support is the ``hops`` passages of the
chain; every other passage of the world is a distractor (people share given and family names,
and a city's name appears in the passages of everyone born there).

:func:`read_field` is the reader the oracle uses: it finds a fact in a passage's *text* with the
templates' regular expressions, so a question is answerable exactly when the written passages
say what the world holds (tested over many seeds).

Everything here is a pure function of its seed (``random.Random`` seeded with a string).
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, field
from functools import lru_cache

__all__ = [
    "Entity",
    "Passage",
    "Question",
    "World",
    "VOCABULARY",
    "make_world",
    "make_question",
    "read_field",
]

_GIVEN = [a + b for a in ("Al", "Bor", "Cas", "Dun", "El", "Fen") for b in ("a", "in", "o", "ric")]
_FAMILY = [a + b for a in ("Mar", "Ost", "Quin", "Rav", "Sel", "Tor") for b in ("ley", "wick", "mont", "dal")]
_CITIES = [a + b for a in ("Brim", "Cor", "Dray", "Hal", "Kel", "Lun") for b in ("haven", "ford", "mere", "gate", "stead")]
_COMPANY_STEMS = [a + b for a in ("Vex", "Zan", "Pol", "Gar") for b in ("ta", "ion", "ix", "ora", "um")]
_COMPANY_KINDS = ("Works", "Mills", "Trading", "Foundry")
_COUNTRIES = ("Aldoria", "Belmark", "Corvania", "Dunmarch", "Estova", "Farland", "Gessia", "Hollin", "Ivrel", "Jaskar")
_PROFESSIONS = ("painter", "baker", "sailor", "weaver", "miner", "potter", "tailor", "farmer",
                "mason", "brewer", "smith", "cooper", "glazier", "fletcher", "chandler", "printer")
_INDUSTRIES = ("shipping", "textiles", "mining", "timber", "glass", "salt", "wool", "silver", "paper",
               "spice", "leather", "grain")
_YEARS = (1700, 1999)

KINDS = ("person", "city", "company")

# field -> (kind of subject, kind of value: a kind of entity, "year", "country" or a lowercase
# "word", its paraphrases)
FIELDS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "profession": ("person", "word", ("{s} is a {v}.", "{s} works as a {v}.")),
    "birth_year": ("person", "year", ("{s} was born in {v}.", "{s} was born in the year {v}.")),
    "born_in": ("person", "city", ("{s} was born in the city of {v}.", "The birthplace of {s} is {v}.")),
    "works_for": ("person", "company", ("{s} works for {v}.", "{s} is employed by {v}.")),
    "country": ("city", "country", ("{s} is a city in {v}.", "{s} lies in {v}.")),
    "city_founded": ("city", "year", ("{s} was founded in {v}.", "{s} was established in {v}.")),
    "mayor": ("city", "person", ("The mayor of {s} is {v}.", "{s} is governed by mayor {v}.")),
    "industry": ("company", "word", ("{s} is a company in the {v} trade.", "{s} deals in {v}.")),
    "company_founded": ("company", "year", ("{s} was founded in {v}.", "{s} was set up in {v}.")),
    "based_in": ("company", "city", ("{s} is based in {v}.", "{s} has its headquarters in {v}.")),
    "founder": ("company", "person", ("{s} was founded by {v}.", "The founder of {s} is {v}.")),
}
RELATIONS = [f for f, (_, v, _) in FIELDS.items() if v in KINDS]
INTRO = {"person": "profession", "city": "country", "company": "industry"}  # the passage's first sentence

# How a relation reads inside a question (the inner noun phrase), and how each field is asked.
NOUN_PHRASE = {
    "born_in": "the city where {np} was born",
    "works_for": "the company {np} works for",
    "based_in": "the city where {np} is based",
    "founder": "the founder of {np}",
    "mayor": "the mayor of {np}",
}
ASK = {
    "profession": "What is the profession of {np}?",
    "birth_year": "In which year was {np} born?",
    "born_in": "In which city was {np} born?",
    "works_for": "Which company does {np} work for?",
    "country": "In which country is {np}?",
    "city_founded": "In which year was {np} founded?",
    "mayor": "Who is the mayor of {np}?",
    "industry": "Which trade is {np} in?",
    "company_founded": "In which year was {np} founded?",
    "based_in": "In which city is {np} based?",
    "founder": "Who founded {np}?",
}

_VALUE_PATTERN = {"word": r"[a-z]+", "year": r"\d{4}", "country": r"[A-Z][a-z]+", "person": r"[A-Z][a-z]+ [A-Z][a-z]+",
                  "city": r"[A-Z][a-z]+", "company": r"[A-Z][a-z]+ [A-Z][a-z]+"}


def _vocabulary() -> list[str]:
    template_words = " ".join(t for _, _, ts in FIELDS.values() for t in ts) + " " + " ".join(
        list(NOUN_PHRASE.values()) + list(ASK.values()))
    words = set(re.findall(r"[A-Za-z]+", template_words.replace("{s}", "").replace("{v}", "").replace("{np}", "")))
    words.update(_GIVEN + _FAMILY + _CITIES + _COMPANY_STEMS + list(_COMPANY_KINDS) + list(_COUNTRIES)
                 + list(_PROFESSIONS) + list(_INDUSTRIES))
    return sorted(words)


VOCABULARY: list[str] = _vocabulary()
"""Every word the generated language uses (for a word-level tokenizer); years are digits."""


@dataclass
class Entity:
    kind: str
    name: str
    facts: dict[str, str | int] = field(default_factory=dict)
    """field -> value: an attribute, or the *name* of the related entity."""


@dataclass(frozen=True)
class Passage:
    id: str
    title: str
    text: str


@dataclass
class World:
    seed: str
    entities: dict[str, Entity]
    """By name (names are unique within a world)."""
    passages: list[Passage]

    @property
    def fingerprint(self) -> str:
        """What the world *is* (its passages), as a short hash."""
        blob = "\n".join(f"{p.id}\t{p.title}\t{p.text}" for p in self.passages)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def passage_of(self, name: str) -> Passage:
        return next(p for p in self.passages if p.title == name)


@dataclass(frozen=True)
class Question:
    text: str
    answer: str
    hops: int
    chain: tuple[str, ...]
    """The head entity's name, then the fields followed (the last one is asked)."""
    support: tuple[str, ...]
    """Names of the entities whose passages answer it, in reading order."""


def _names(rng: random.Random, counts: dict[str, int]) -> dict[str, list[str]]:
    people: set[str] = set()
    while len(people) < counts["person"]:  # a world's people share given and family names
        people.add(f"{rng.choice(_GIVEN[:8 + rng.randrange(8)])} {rng.choice(_FAMILY[:6 + rng.randrange(8)])}")
    companies = rng.sample(_COMPANY_STEMS, counts["company"])
    persons = sorted(people)  # a set's order varies between processes; the sorted list does not
    rng.shuffle(persons)
    return {"person": persons,
            "city": rng.sample(_CITIES, counts["city"]),
            "company": [f"{stem} {rng.choice(_COMPANY_KINDS)}" for stem in companies]}


def _value(rng: random.Random, kind: str, names: dict[str, list[str]], fld: str) -> str | int:
    if kind in KINDS:
        return rng.choice(names[kind])
    if kind == "year":
        return rng.randint(*_YEARS)
    return rng.choice({"profession": _PROFESSIONS, "country": _COUNTRIES, "industry": _INDUSTRIES}[fld])


def _write(rng: random.Random, entity: Entity) -> str:
    """The entity's passage: its intro sentence, then its other facts in a random order."""
    intro = INTRO[entity.kind]
    rest = [f for f in entity.facts if f != intro]
    rng.shuffle(rest)
    sentences = [rng.choice(FIELDS[f][2]).format(s=entity.name, v=entity.facts[f]) for f in [intro, *rest]]
    return " ".join(sentences)


@lru_cache(maxsize=256)
def make_world(seed: int, namespace: str = "train", people: int = 8, cities: int = 4, companies: int = 4) -> World:
    """The world of ``(namespace, seed)``; different namespaces never share a world's RNG stream
    (the frozen test worlds use ``"test"``, training ``"train"``). Cached: treat it as read-only."""
    rng = random.Random(f"searchworld:{namespace}:{seed}")
    names = _names(rng, {"person": people, "city": cities, "company": companies})
    entities: dict[str, Entity] = {}
    for kind in KINDS:
        for name in names[kind]:
            facts = {f: _value(rng, vkind, names, f) for f, (skind, vkind, _) in FIELDS.items() if skind == kind}
            entities[name] = Entity(kind, name, facts)
    order = list(entities.values())
    rng.shuffle(order)  # passage ids say nothing about an entity's kind
    passages = [Passage(f"d{i + 1:02d}", e.name, _write(rng, e)) for i, e in enumerate(order)]
    return World(f"{namespace}:{seed}", entities, passages)


def make_question(world: World, hops: int, rng: random.Random) -> Question:
    """A ``hops``-hop question about ``world``: a chain through ``hops`` distinct entities."""
    for _ in range(1000):
        head = rng.choice(sorted(world.entities))
        names, fields = [head], []
        while len(names) < hops:
            entity = world.entities[names[-1]]
            options = [f for f in RELATIONS if FIELDS[f][0] == entity.kind and entity.facts[f] not in names]
            if not options:
                break
            fields.append(rng.choice(options))
            names.append(str(entity.facts[fields[-1]]))
        if len(names) < hops:
            continue
        last = world.entities[names[-1]]
        asked = rng.choice([f for f in FIELDS if FIELDS[f][0] == last.kind])
        phrase = head
        for f in fields:
            phrase = NOUN_PHRASE[f].format(np=phrase)
        return Question(ASK[asked].format(np=phrase), str(last.facts[asked]), hops,
                        (head, *fields, asked), tuple(names))
    raise ValueError(f"world {world.seed} has no {hops}-hop chain")  # not reached for the default sizes


@lru_cache(maxsize=None)
def _patterns(fld: str, subject: str) -> tuple[re.Pattern[str], ...]:
    value = f"(?P<v>{_VALUE_PATTERN[FIELDS[fld][1]]})"
    out = []
    for template in FIELDS[fld][2]:
        head, _, tail = template.partition("{v}")
        out.append(re.compile(re.escape(head.format(s=subject)) + value + re.escape(tail.format(s=subject))))
    return tuple(out)


def read_field(text: str, subject: str, fld: str) -> str | None:
    """The value of ``fld`` for ``subject`` as the passage ``text`` states it, or None."""
    for pattern in _patterns(fld, subject):
        found = pattern.search(text)
        if found:
            return found.group("v")
    return None
