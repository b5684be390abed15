"""A synthetic function-calling task in the unified format: small enough to learn on a CPU, hard enough that
an untrained model scores ~0.

Nine tools with typed parameters (string, integer, number, boolean, enum). Every request names its argument
values in the text (strings and enum values in single quotes, `_q`), and every phrasing of a tool names what
it is for ("weather", "flight", "timer", ...), so a correct call picks the tool from the request and copies the
values. Names (cities, people, restaurants, tickers) are made up, 1500 of each: too many to memorize. Four kinds:
- single: request → call → tool result → answer;
- parallel: two requests in one message → two calls in one assistant turn → two results → answer;
- multi_turn: two rounds of single, the second after the first answer;
- no_call: chit-chat, general questions, or requests no tool can serve → a direct answer.

Held-out records never share a request phrasing or a free argument value with training records: tool request
templates, parallel connectors and no-call questions are split by template, strings by their pools, integers
and numbers by a residue rule (each parameter's range keeps values on both sides). Enum and boolean values
come from fixed domains and are shared. Everything is a function of the seed (numpy SeedSequence).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xlam_hpc.schema import FunctionSpec, ToolCall, Trajectory, Turn, encode_record, validate_trajectory

__all__ = [
    "ASKS",
    "KINDS",
    "SOURCE",
    "TAILS",
    "TOOLS",
    "Split",
    "free_values",
    "make_split",
    "toolcall_records",
    "write_toolcall_dataset",
]

SOURCE = "synth-toolcall"
KINDS = ("single", "parallel", "multi_turn", "no_call")
KIND_WEIGHTS = (0.4, 0.2, 0.2, 0.2)
SYSTEM = "You are a helpful assistant. Call a tool when the request needs one; otherwise answer directly."
N_TOOLS_SHOWN = 2
"""Tools offered per record: the ones the conversation calls, then distractors up to this many."""

_HELDOUT_FRACTION = 1 / 3

Args = dict[str, Any]


@dataclass(frozen=True)
class Param:
    name: str
    type: str  # string | integer | number | boolean | enum
    description: str
    pool: str = ""  # value pool (string: a POOLS key; integer: "lo..hi"; number: money)
    enum: tuple[str, ...] = ()

    def schema(self) -> dict[str, Any]:
        if self.type == "enum":
            return {"type": "string", "enum": list(self.enum), "description": self.description}
        return {"type": self.type, "description": self.description}


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    params: tuple[Param, ...]
    templates: tuple[str, ...]
    """What a request asks for, in words naming the tool's purpose: `{param}` is the value as text;
    `{flag|yes text|no text}` renders a boolean. A request wraps one in an ASK and a TAIL."""
    result: Callable[[Args, np.random.Generator], tuple[dict[str, Any], str]]
    """(tool result object, the assistant's answer sentence after it)."""

    def spec(self) -> FunctionSpec:
        props = {p.name: p.schema() for p in self.params}
        parameters = {"type": "object", "properties": props, "required": [p.name for p in self.params]}
        return FunctionSpec(name=self.name, description=self.description, parameters=parameters)


_ONSETS = ("b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "st", "tr")
_RIMES = ("a", "e", "i", "o", "u", "an", "el", "in", "or", "us", "ar", "en", "is", "om")
_EATERIES = ("Bistro", "Grill", "Tavern", "Kitchen", "Diner", "Cafe", "Garden", "House")


def _names(stream: int, n: int, syllables: tuple[int, ...]) -> tuple[str, ...]:
    """`n` distinct made-up names of the given syllable counts. Made up, and many: a name is seen a few times
    at most in training, so the only way to write it in a call is to copy it from the request (with a few
    hundred real city names a tiny model memorizes them and completes the first letters it copied)."""
    rng = np.random.default_rng(np.random.SeedSequence([1234, stream]))
    out: dict[str, None] = {}
    while len(out) < n:
        k = syllables[int(rng.integers(len(syllables)))]
        parts = [_ONSETS[int(rng.integers(len(_ONSETS)))] + _RIMES[int(rng.integers(len(_RIMES)))] for _ in range(k)]
        out["".join(parts).capitalize()] = None
    return tuple(out)


# fmt: off
_TODO_VERBS = (
    "buy", "fix", "clean", "return", "order", "renew", "paint", "sort", "book", "check",
)
_TODO_OBJECTS = (
    "the bike", "printer ink", "the garage", "library books", "the passport", "the fence", "the closet",
    "a dentist visit", "the car tires", "new curtains", "the smoke alarm", "the gutters", "a birthday cake",
    "the lawn mower", "the heater", "train tickets",
)
# fmt: on
POOLS: dict[str, tuple[str, ...]] = {
    "city": _names(0, 1500, (2, 3)),
    "person": _names(1, 1500, (2,)),
    "restaurant": tuple(f"{name} {_EATERIES[i % len(_EATERIES)]}" for i, name in enumerate(_names(2, 1500, (2,)))),
    "message": (
        "running ten minutes late",
        "call me when you land",
        "the meeting moved to Friday",
        "dinner is ready",
        "happy birthday",
        "can you pick up milk",
        "I left the keys at home",
        "see you at the gym",
        "the report is done",
        "please water the plants",
        "bring the charger",
        "the train is delayed",
        "lunch at noon",
        "thanks for the help",
        "I will be home soon",
        "check your email",
        "the package arrived",
        "good luck today",
        "meet me at the station",
        "do not forget the tickets",
        "the car is fixed",
        "movie starts at eight",
        "the cat is fed",
        "call the bank",
        "pizza is on the way",
        "the door is open",
        "I got the job",
        "rain is coming",
        "send me the photos",
        "we won the game",
    ),
    "todo": tuple(f"{v} {o}" for v in _TODO_VERBS for o in _TODO_OBJECTS),
    "label": (
        "pasta",
        "laundry",
        "workout",
        "tea",
        "study break",
        "pizza",
        "meditation",
        "nap",
        "cookies",
        "parking meter",
        "rice",
        "eggs",
        "stretching",
        "focus session",
        "bread",
        "oven",
        "phone call",
        "yoga",
        "coffee",
        "homework",
        "reading",
        "soup",
        "plank",
        "piano practice",
        "cake",
        "steak",
        "email check",
        "run",
    ),
    "ticker": tuple(
        dict.fromkeys(
            "".join(chr(65 + int(c)) for c in row) for row in np.random.default_rng(1234).integers(0, 26, (1500, 4))
        )
    ),
}  # fmt: skip
"""Free string values. Large pools make copying from the request the only way to get a value right."""

CURRENCIES = ("USD", "EUR", "GBP", "JPY", "CHF", "CAD")
CONDITIONS = ("sunny", "cloudy", "rainy", "windy", "snowy", "foggy")


def _q(value: str) -> str:
    """A free string value as requests and answers write it: in single quotes. Tokenizers split a word after a
    space differently than after a quote (mistral-v3: ' Krakow' is ▁Kr|ak|ow, "'Krakow" is ▁'|K|r|ak|ow), so
    unquoted, the tokens a call must write are not the request's; quoted, they are the JSON argument's own
    tokens, and a correct call copies them. Single quotes: the cue before a value (▁') then appears nowhere in
    the tool schemas or calls, whose JSON is full of ▁"."""
    assert "'" not in value, value
    return f"'{value}'"


def _weather(a: Args, rng: np.random.Generator) -> tuple[dict[str, Any], str]:
    t = int(rng.integers(-5, 35)) if a["unit"] == "celsius" else int(rng.integers(25, 95))
    cond = CONDITIONS[int(rng.integers(len(CONDITIONS)))]
    return {"temperature": t, "condition": cond}, f"It is {t} degrees {a['unit']} and {cond} in {_q(a['city'])}."


def _currency(a: Args, rng: np.random.Generator) -> tuple[dict[str, Any], str]:
    out = round(a["amount"] * float(rng.uniform(0.5, 1.5)), 2)
    return {"converted": out}, f"{a['amount']} {a['from_currency']} is {out} {a['to_currency']}."


def _table(a: Args, rng: np.random.Generator) -> tuple[dict[str, Any], str]:
    code = f"R{int(rng.integers(100, 1000))}"
    where = "outdoors" if a["outdoor"] else "indoors"
    text = f"Your table for {a['guests']} at {_q(a['restaurant'])} is booked {where}; the confirmation code is {code}."
    return {"status": "confirmed", "code": code}, text


def _message(a: Args, rng: np.random.Generator) -> tuple[dict[str, Any], str]:
    return {"status": "sent"}, f"Your message to {_q(a['recipient'])} has been sent."


def _flights(a: Args, rng: np.random.Generator) -> tuple[dict[str, Any], str]:
    n, price = int(rng.integers(1, 9)), int(rng.integers(80, 900))
    text = f"I found {n} flights from {_q(a['origin'])} to {_q(a['destination'])}; the cheapest costs {price} dollars."
    return {"flights": n, "cheapest": price}, text


def _todo(a: Args, rng: np.random.Generator) -> tuple[dict[str, Any], str]:
    return {"status": "added"}, f"I added {_q(a['title'])} to your list with {a['priority']} priority."


def _stock(a: Args, rng: np.random.Generator) -> tuple[dict[str, Any], str]:
    price = round(float(rng.uniform(5, 900)), 2)
    return {"price": price}, f"{_q(a['symbol'])} is trading at {price} dollars."


def _timer(a: Args, rng: np.random.Generator) -> tuple[dict[str, Any], str]:
    return {"status": "started"}, f"Your {_q(a['label'])} timer is set for {a['minutes']} minutes."


def _tip(a: Args, rng: np.random.Generator) -> tuple[dict[str, Any], str]:
    tip = round(a["bill"] * a["percent"] / 100, 2)
    return {"tip": tip}, f"A {a['percent']} percent tip on {a['bill']} is {tip}."


TOOLS: tuple[Tool, ...] = (
    Tool(
        "get_weather",
        "Current weather of a city.",
        (
            Param("city", "string", "City name", "city"),
            Param("unit", "enum", "Temperature unit", enum=("celsius", "fahrenheit")),
        ),
        (
            "the weather in {city}, in {unit}",
            "the current weather for {city} in {unit}",
            "today's weather in {city} using {unit}",
            "a weather report for {city} with {unit} temperatures",
            "the weather right now in {city}, shown in {unit}",
            "a {unit} weather check for {city}",
        ),
        _weather,
    ),
    Tool(
        "convert_currency",
        "Convert an amount of money between currencies.",
        (
            Param("amount", "number", "Amount to convert", "money"),
            Param("from_currency", "enum", "Currency of the amount", enum=CURRENCIES),
            Param("to_currency", "enum", "Target currency", enum=CURRENCIES),
        ),
        (
            "{amount} {from_currency} converted to {to_currency}",
            "a currency conversion of {amount} {from_currency} into {to_currency}",
            "the value of {amount} {from_currency} in {to_currency}",
            "{amount} {from_currency} exchanged for {to_currency}",
            "a conversion from {amount} {from_currency} to {to_currency}",
            "the {to_currency} amount for {amount} {from_currency}",
        ),
        _currency,
    ),
    Tool(
        "book_table",
        "Reserve a table at a restaurant.",
        (
            Param("restaurant", "string", "Restaurant name", "restaurant"),
            Param("guests", "integer", "Number of guests", "1..20"),
            Param(
                "outdoor",
                "boolean",
                "Seat outdoors",
            ),
        ),
        (
            "a table at {restaurant} for {guests} people, {outdoor|outside|inside}",
            "a table reservation at {restaurant} for {guests} guests, seated {outdoor|outdoors|indoors}",
            "a table for {guests} at {restaurant}, {outdoor|on the terrace|in the dining room}",
            "a booking at {restaurant}: table for {guests}, {outdoor|outdoor seating|indoor seating}",
            "an {outdoor|outdoor|indoor} table for {guests} people at {restaurant}",
            "{guests} seats at a table in {restaurant}, {outdoor|outside|inside}",
        ),
        _table,
    ),
    Tool(
        "send_message",
        "Send a text message to a contact.",
        (
            Param("recipient", "string", "Contact name", "person"),
            Param("text", "string", "Message text", "message"),
            Param("urgent", "boolean", "Mark as urgent"),
        ),
        (
            "a message to {recipient} saying {text}, {urgent|urgent|not urgent}",
            "an {urgent|urgent|ordinary} message for {recipient}: {text}",
            "a text message to {recipient} that says {text} ({urgent|urgent|no rush})",
            "a {urgent|high priority|normal} message to {recipient} with {text}",
            "the message {text} sent to {recipient}, {urgent|marked urgent|not urgent}",
            "a message for {recipient}: {text}; {urgent|it is urgent|it can wait}",
        ),
        _message,
    ),
    Tool(
        "search_flights",
        "Search flights between two cities.",
        (
            Param("origin", "string", "Departure city", "city"),
            Param("destination", "string", "Arrival city", "city"),
            Param("max_stops", "integer", "Maximum number of stops", "0..3"),
        ),
        (
            "flights from {origin} to {destination} with at most {max_stops} stops",
            "a flight search {origin} to {destination}, no more than {max_stops} stops",
            "a flight from {origin} to {destination} with {max_stops} stops max",
            "flights between {origin} and {destination} with up to {max_stops} stops",
            "flights leaving {origin} for {destination}, maximum {max_stops} stops",
            "{origin} to {destination} flights with {max_stops} or fewer stops",
        ),
        _flights,
    ),
    Tool(
        "add_todo",
        "Add an item to the to-do list.",
        (
            Param("title", "string", "What to do", "todo"),
            Param("priority", "enum", "Priority", enum=("low", "medium", "high")),
        ),
        (
            "{title} added to my to-do list with {priority} priority",
            "a to-do item {title} at {priority} priority",
            "a new task on my to-do list: {title} ({priority} priority)",
            "a {priority} priority to-do: {title}",
            "a to-do entry {title}, {priority} priority",
            "my to-do list to include {title} with {priority} priority",
        ),
        _todo,
    ),
    Tool(
        "get_stock_price",
        "Latest price of a stock.",
        (Param("symbol", "string", "Ticker symbol", "ticker"),),
        (
            "the stock price of {symbol}",
            "the latest stock quote for {symbol}",
            "what one share of {symbol} stock costs",
            "the current price of {symbol} stock",
            "a stock quote for {symbol}",
            "the price {symbol} stock trades at today",
        ),
        _stock,
    ),
    Tool(
        "set_timer",
        "Start a countdown timer.",
        (
            Param("minutes", "integer", "Duration in minutes", "1..120"),
            Param("label", "string", "Timer name", "label"),
        ),
        (
            "a {minutes} minute timer for {label}",
            "a timer called {label} for {minutes} minutes",
            "a timer: {label}, {minutes} minutes",
            "a countdown timer of {minutes} minutes for the {label}",
            "a {label} timer set to {minutes} minutes",
            "a timer for {label} that runs {minutes} minutes",
        ),
        _timer,
    ),
    Tool(
        "calculate_tip",
        "Compute the tip for a bill.",
        (
            Param("bill", "number", "Bill total", "money"),
            Param("percent", "integer", "Tip percentage", "5..30"),
        ),
        (
            "a {percent} percent tip on {bill}",
            "the tip for a bill of {bill} at {percent} percent",
            "the tip on {bill} at {percent} percent",
            "{percent} percent of {bill} as a tip",
            "the tip amount for {bill} if I leave {percent} percent",
            "a tip calculation: bill {bill}, {percent} percent",
        ),
        _tip,
    ),
)

ASKS = (
    "I would like {obj}.",
    "Please get me {obj}.",
    "Could you get me {obj}?",
    "I need {obj}.",
    "Can I have {obj}?",
    "Help me with {obj}.",
    "My request: {obj}.",
    "Go ahead with {obj}.",
    "I am asking for {obj}.",
)
TAILS = ("", " Thanks!", " Thank you.", " Cheers.", " That would help a lot.", " Thanks in advance.")
"""A request is ASK(tool phrase) + TAIL: the ask and the tail are shared by every tool, so only the tool's own
phrase (which names what it is for) tells which tool a request wants."""

CONNECTORS = (
    "{a} Also, {b}",
    "{a} And one more thing: {b}",
    "Two things. {a} {b}",
    "{a} After that, {b}",
    "Please do both: {a} {b}",
    "{a} In addition, {b}",
)
"""How a parallel request joins its two requests."""

NO_CALL: tuple[tuple[str, str], ...] = (
    ("Hi! How are you today?", "I'm doing well, thank you! How can I help you?"),
    ("What can you help me with?", "I can check the weather, convert money, book tables, send messages and more."),
    ("Thank you, that's all for now.", "You're welcome! Have a great day."),
    ("Tell me a joke.", "Why did the scarecrow win an award? Because he was outstanding in his field."),
    ("Who wrote Romeo and Juliet?", "William Shakespeare wrote Romeo and Juliet."),
    ("How many days are in a week?", "There are seven days in a week."),
    ("Good morning!", "Good morning! What can I do for you?"),
    ("What color is the sky on a clear day?", "On a clear day the sky is blue."),
    ("Can you recommend a good book?", "You might enjoy 'The Hobbit' by J.R.R. Tolkien."),
    ("Order me a pizza.", "Sorry, none of my tools can order food."),
    ("Turn off the living room lights.", "Sorry, I cannot control lights with the tools I have."),
    ("Play some relaxing music.", "Sorry, I have no tool to play music."),
    ("Call a taxi to the airport.", "Sorry, I cannot book taxis with my tools."),
    ("What is the capital of Japan?", "The capital of Japan is Tokyo."),
    ("How do I say thank you in French?", "In French, thank you is 'merci'."),
    ("Are you a human?", "No, I am an AI assistant."),
)
"""Requests that need no tool, with their answers."""


@dataclass(frozen=True)
class Split:
    """What one side (train or heldout) may use: template indexes and free values."""

    name: str
    templates: dict[str, tuple[int, ...]]
    """tool name / 'connector' / 'no_call' → usable template indexes."""
    strings: dict[str, tuple[str, ...]]
    """string pool → usable values."""
    residue: int
    """Integers v with (v + residue) % 3 == 0, and numbers whose cents satisfy it, are held out."""
    heldout: bool = False
    _ints: dict[str, tuple[int, ...]] = field(default_factory=dict, repr=False)

    def ints(self, pool: str) -> tuple[int, ...]:
        if pool not in self._ints:
            lo, hi = (int(x) for x in pool.split(".."))
            self._ints[pool] = tuple(v for v in range(lo, hi + 1) if self._side(v))
        return self._ints[pool]

    def _side(self, v: int) -> bool:
        return ((v + self.residue) % 3 == 0) == self.heldout


def _split_indexes(rng: np.random.Generator, n: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    order = [int(i) for i in rng.permutation(n)]
    k = max(1, round(n * _HELDOUT_FRACTION))
    return tuple(sorted(order[k:])), tuple(sorted(order[:k]))


def make_split(seed: int) -> tuple[Split, Split]:
    """(train, heldout): disjoint template indexes, string values and integer/number residues."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    groups = {t.name: len(t.templates) for t in TOOLS} | {
        "ask": len(ASKS),
        "tail": len(TAILS),
        "connector": len(CONNECTORS),
        "no_call": len(NO_CALL),
    }
    templates = {name: _split_indexes(rng, n) for name, n in groups.items()}
    strings = {}
    for pool, values in POOLS.items():
        tr, ho = _split_indexes(rng, len(values))
        strings[pool] = (tuple(values[i] for i in tr), tuple(values[i] for i in ho))
    residue = int(rng.integers(3))
    return tuple(  # type: ignore[return-value]
        Split(
            name=name,
            templates={k: v[side] for k, v in templates.items()},
            strings={k: v[side] for k, v in strings.items()},
            residue=residue,
            heldout=bool(side),
        )
        for side, name in ((0, "train"), (1, "heldout"))
    )


def _value(p: Param, split: Split, rng: np.random.Generator) -> Any:
    if p.type == "enum":
        return p.enum[int(rng.integers(len(p.enum)))]
    if p.type == "boolean":
        return bool(rng.integers(2))
    if p.type == "string":
        pool = split.strings[p.pool]
        return pool[int(rng.integers(len(pool)))]
    if p.type == "integer":
        ints = split.ints(p.pool)
        return ints[int(rng.integers(len(ints)))]
    # number: money with two-digit cents (not a multiple of 10, so the text shows both), on this split's side
    cents = [c for c in split.ints("1..99") if c % 10]
    return round(int(rng.integers(1, 500)) + cents[int(rng.integers(len(cents)))] / 100, 2)


def free_values(tool: Tool, args: Args) -> list[Any]:
    """The string, integer and number values of `args` (the ones split between train and heldout)."""
    return [args[p.name] for p in tool.params if p.type not in ("enum", "boolean")]


_SLOT = re.compile(r"\{(\w+)(?:\|([^|}]*)\|([^}]*))?\}")


def _render(template: str, args: Args) -> str:
    def sub(m: re.Match[str]) -> str:
        v = args[m.group(1)]
        if m.group(2) is not None:
            return m.group(2) if v else m.group(3)
        return json.dumps(v) if isinstance(v, float) else _q(v) if isinstance(v, str) else str(v)

    return _SLOT.sub(sub, template)


@dataclass
class _Builder:
    split: Split
    rng: np.random.Generator
    turns: list[Turn] = field(default_factory=list)
    used: list[str] = field(default_factory=list)  # template ids
    called: list[str] = field(default_factory=list)  # tool names, in call order

    def pick(self, group: str) -> int:
        options = self.split.templates[group]
        i = options[int(self.rng.integers(len(options)))]
        self.used.append(f"{group}/{i}")
        return i

    def request(self, tool: Tool, differ_from: Args | None = None) -> tuple[str, Args]:
        """A request for `tool`: distinct string values within the call (origin ≠ destination), and other free
        values than `differ_from` (the first request of a parallel pair to the same tool)."""
        for _ in range(1000):
            args = {p.name: _value(p, self.split, self.rng) for p in tool.params}
            strings = [args[p.name] for p in tool.params if p.type == "string"]
            if len(set(strings)) == len(strings) and (
                differ_from is None or free_values(tool, args) != free_values(tool, differ_from)
            ):
                break
        else:  # the pools are far larger than any record needs
            raise AssertionError(f"no distinct values for {tool.name}")
        phrase = _render(tool.templates[self.pick(tool.name)], args)
        text = ASKS[self.pick("ask")].replace("{obj}", phrase) + TAILS[self.pick("tail")]
        return text[0].upper() + text[1:], args

    def calls(self, requests: list[tuple[Tool, Args]]) -> None:
        """One assistant turn calling every request's tool, the tool turns, then the answer."""
        base = len(self.called)
        calls = [ToolCall(id=f"call_{base + k + 1}", name=t.name, arguments=a) for k, (t, a) in enumerate(requests)]
        self.turns.append(Turn(role="assistant", tool_calls=calls))
        answers = []
        for call, (tool, args) in zip(calls, requests, strict=True):
            result, answer = tool.result(args, self.rng)
            self.turns.append(Turn(role="tool", tool_call_id=call.id, name=tool.name, content=json.dumps(result)))
            answers.append(answer)
            self.called.append(tool.name)
        self.turns.append(Turn(role="assistant", content=" ".join(answers)))

    def single(self, tool: Tool) -> None:
        text, args = self.request(tool)
        self.turns.append(Turn(role="user", content=text))
        self.calls([(tool, args)])


def _tool(rng: np.random.Generator, exclude: set[str]) -> Tool:
    options = [t for t in TOOLS if t.name not in exclude]
    return options[int(rng.integers(len(options)))]


def _record(split: Split, index: int, rng: np.random.Generator) -> Trajectory:
    kind = KINDS[int(rng.choice(len(KINDS), p=KIND_WEIGHTS))]
    b = _Builder(split, rng)
    if kind == "single":
        b.single(_tool(rng, set()))
    elif kind == "multi_turn":
        first = _tool(rng, set())
        b.single(first)
        b.single(_tool(rng, {first.name}))
    elif kind == "parallel":
        t1 = _tool(rng, set())
        t2 = t1 if rng.random() < 0.5 else _tool(rng, {t1.name})
        a_text, a_args = b.request(t1)
        b_text, b_args = b.request(t2, a_args if t2 is t1 else None)
        connector = CONNECTORS[b.pick("connector")]
        b.turns.append(Turn(role="user", content=connector.format(a=a_text, b=b_text)))
        b.calls([(t1, a_args), (t2, b_args)])
    else:
        question, answer = NO_CALL[b.pick("no_call")]
        b.turns += [Turn(role="user", content=question), Turn(role="assistant", content=answer)]
    shown = list(dict.fromkeys(b.called))
    while len(shown) < N_TOOLS_SHOWN:
        shown.append(_tool(rng, set(shown)).name)
    order = [shown[int(i)] for i in rng.permutation(len(shown))]
    by_name = {t.name: t for t in TOOLS}
    rec = Trajectory(
        unique_trajectory_id=f"toolcall-{split.name}-{index:05d}-{kind}",
        source=SOURCE,
        task_instruction=SYSTEM,
        tools=[by_name[n].spec() for n in order],
        conversation=b.turns,
        split=split.name,
        meta={"kind": kind, "templates": b.used},
    )
    return validate_trajectory(rec)


def toolcall_records(seed: int, split: str, n: int) -> list[Trajectory]:
    """`n` records of one side ('train' or 'heldout') for `seed`."""
    sides = dict(zip(("train", "heldout"), make_split(seed), strict=True))
    if split not in sides:
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1 if split == "train" else 2]))
    return [_record(sides[split], i, rng) for i in range(n)]


def write_toolcall_dataset(out_dir: str | Path, *, seed: int = 0, train: int = 8000, heldout: int = 200) -> dict:
    """Write OUT_DIR/train.jsonl and OUT_DIR/heldout.jsonl; returns {"train", "heldout"} paths, counts by
    kind, and the seed."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"seed": seed}
    for split, n in (("train", train), ("heldout", heldout)):
        if n < 1:
            raise ValueError(f"{split}: need at least one record, got {n}")
        records = toolcall_records(seed, split, n)
        path = out / f"{split}.jsonl"
        tmp = path.with_suffix(".jsonl.tmp")
        with tmp.open("wb") as f:
            for rec in records:
                f.write(encode_record(rec) + b"\n")
        tmp.replace(path)
        kinds = {k: sum(r.meta["kind"] == k for r in records) for k in KINDS}
        summary[split] = str(path)
        summary[f"{split}_kinds"] = kinds
    return summary
