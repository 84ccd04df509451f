"""The tiny world: vocabularies, and the generators of the pretraining corpus and of the two tasks.

Everything is drawn from a ``random.Random(seed)``, so the same seed gives the same text, byte for
byte. No third-party text is used.

The corpus teaches the base *the world* and *the skill of continuing a pattern*, never the tasks:

* **places** (prose): restaurants described in fluent sentences, with the same attributes that
  ``data2text`` uses (food, price, area, rating, family friendliness, a landmark nearby), but never in
  the ``name[...] , food[...]`` meaning-representation format;
* **stories** (prose): people visit places and say what they thought, with negation and mixed cues
  ("the soup was not bad but the waiter was rude ... in the end her feeling was negative"), so the
  words *positive* and *negative* carry their meaning; never the ``Review: ... Sentiment:`` template;
* **episodes** (bursty, after Chan et al. 2022): a run of 6-16 pairs of *another* mapping (opposites,
  country -> capital, item -> category, weather -> good/bad, events -> happy/sad or positive/negative,
  numbers -> even/odd, ...), each episode in one format drawn from a pool of separators and
  ``Key: ...`` line pairs with keys drawn from large pools or made up. Predicting the answers of an
  episode needs the pattern shown earlier in the same context: this is what teaches in-context
  learning (induction). 15% of the polarity episodes flip their mapping (good events -> "negative").

The world corpus alone taught the formats but not in-context learning: the base had no induction
(it paid as much for a repeated word sequence as for a new one), and the shots added nothing. How
the recipe was found, trial by trial with what each measured, is in the base's model card
(``data/tiny/README.md``, written by ``peftbook.tiny.card``).

So the recipe is two parts: the world corpus above (the *world stage*, ``corpus_documents``), then a
curriculum (``stage_documents``: induction from repeated word sequences, then polarity episodes with
arbitrary label pairs, then the same in two-line formats).
"""
from __future__ import annotations

import random

# The tasks own their names and data2text's slot vocabulary (its metric knows it); restaurants draw from it
from peftbook.tasks import AREAS, EAT_TYPES, FAMILY, FOODS, KNOWN_TASKS, LANDMARKS, NAMES, PRICES, RATINGS

# ---------------------------------------------------------------------------------------------
# The world's vocabulary
PEOPLE = ["Anna", "Tom", "Maria", "Ben", "Sara", "Leo", "Nina", "Omar", "Emma", "Jack", "Lucy", "Sam",
          "Mia", "Noah", "Zoe", "Adam", "Ella", "Finn", "Ruth", "Ivan", "Kate", "Paul", "Lily", "Hugo"]
HE_SHE = {p: ("she" if p in {"Anna", "Maria", "Sara", "Nina", "Emma", "Lucy", "Mia", "Zoe", "Ella", "Ruth",
                             "Kate", "Lily"} else "he") for p in PEOPLE}

# Review aspects: (subject, verb) pairs and adjectives by polarity.
ASPECTS = [("the food", "was"), ("the soup", "was"), ("the pasta", "was"), ("the curry", "was"),
           ("the coffee", "was"), ("the cake", "was"), ("the service", "was"), ("the staff", "were"),
           ("the waiter", "was"), ("the room", "was"), ("the music", "was"), ("the prices", "were"),
           ("the portions", "were"), ("the wine", "was"), ("the bread", "was"), ("the view", "was"),
           ("the desserts", "were"), ("the chairs", "were"), ("the tea", "was"), ("the fish", "was")]
GOOD_ADJ = ["great", "good", "lovely", "excellent", "tasty", "friendly", "fresh", "wonderful", "perfect",
            "nice", "pleasant", "superb", "delicious", "fine", "warm", "fantastic"]
BAD_ADJ = ["bad", "awful", "terrible", "cold", "rude", "slow", "bland", "poor", "dirty", "horrible",
           "stale", "noisy", "disappointing", "greasy", "dull", "nasty"]
# negated adjectives flip the polarity; only words whose negation reads naturally
NEGATABLE_GOOD = ["good", "great", "friendly", "fresh", "nice", "tasty", "warm", "pleasant"]
NEGATABLE_BAD = ["bad", "awful", "terrible", "slow", "rude", "bland", "dirty", "noisy"]

LABELS = ("positive", "negative")  # the sentiment task's label words
LABELS3 = ("positive", "negative", "moderate")  # sentiment3's: a review with both kinds of clause is moderate


# ---------------------------------------------------------------------------------------------
# Restaurants: one record of slots, and fluent sentences that realise it
SLOT_ORDER = ("name", "eatType", "food", "priceRange", "area", "customer rating", "familyFriendly", "near")


def random_restaurant(rng: random.Random, min_slots: int = 3, max_slots: int = 8) -> dict[str, str]:
    """A restaurant as E2E-style slots: always a name, then a random subset of the others."""
    record = {"name": rng.choice(NAMES), "eatType": rng.choice(EAT_TYPES), "food": rng.choice(FOODS),
              "priceRange": rng.choice(PRICES), "area": rng.choice(AREAS),
              "customer rating": rng.choice(RATINGS), "familyFriendly": rng.choice(FAMILY),
              "near": rng.choice(LANDMARKS)}
    optional = list(SLOT_ORDER[1:])
    keep = set(rng.sample(optional, rng.randint(min_slots - 1, max_slots - 1)))
    return {k: v for k, v in record.items() if k == "name" or k in keep}


def _article(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" else "a"


def describe(record: dict[str, str], rng: random.Random) -> str:
    """One or two fluent sentences realising every slot of ``record`` (the data2text references)."""
    name = record["name"]
    noun = record.get("eatType", rng.choice(["place", "venue"]))
    pre = []
    if "priceRange" in record:
        pre.append({"cheap": "cheap", "moderate": "moderately priced", "high": "expensive"}[record["priceRange"]]
                   if rng.random() < 0.5 else None)
        if pre[-1] is None:
            pre.pop()
            price_clause = rng.choice([f"with {record['priceRange']} prices", f"in the {record['priceRange']} price range"])
        else:
            price_clause = None
    else:
        price_clause = None
    if "food" in record:
        pre.append(record["food"] if record["food"] != "Fast food" else "fast food")
    head = " ".join(pre + [noun])
    first = f"{name} is {_article(head)} {head}"
    extras = []
    if price_clause:
        extras.append(price_clause)
    if "area" in record:
        extras.append(rng.choice([f"in the {record['area']}", f"located in the {record['area']}"])
                      if record["area"] == "city centre" else rng.choice(["by the riverside", "in the riverside area"]))
    if "near" in record:
        extras.append(f"near {record['near']}")
    tail = []
    if "customer rating" in record:
        tail.append(rng.choice([f"has a customer rating of {record['customer rating']}",
                                f"is rated {record['customer rating']} by customers"]))
    if "familyFriendly" in record:
        tail.append("is family friendly" if record["familyFriendly"] == "yes" else "is not family friendly")
    sentence = first + (" " + " ".join(extras) if extras else "")
    if tail:
        joiner = rng.choice([" and ", ". It "]) if len(tail) == 1 else ". It "
        rest = tail[0] if len(tail) == 1 else f"{tail[0]} and {tail[1]}"
        sentence += joiner + rest
    return sentence + "."


# ---------------------------------------------------------------------------------------------
# Reviews: aspect clauses with negation and an overall verdict; the label is a function of the text
def _clause(rng: random.Random, positive: bool, negate_p: float = 0.35) -> str:
    subject, verb = rng.choice(ASPECTS)
    if rng.random() < negate_p:
        adj = rng.choice(NEGATABLE_BAD if positive else NEGATABLE_GOOD)
        return f"{subject} {verb} not {adj}"
    return f"{subject} {verb} {rng.choice(GOOD_ADJ if positive else BAD_ADJ)}"


OVERALL_GOOD = ["overall it was worth it", "overall we loved it", "in the end I was happy", "I would come back",
                "all in all a good visit", "overall I liked it"]
OVERALL_BAD = ["overall it was not worth it", "overall we did not like it", "in the end I was unhappy",
               "I would not come back", "all in all a bad visit", "overall I did not like it"]


def review_text(rng: random.Random, positive: bool) -> str:
    """A short review whose polarity is ``positive``: 1-3 aspect clauses, negation, mixed cues.

    The rule a reader (or a fine-tuned model) must apply: when the clauses disagree, an ``overall``
    clause at the end decides; otherwise every clause agrees with the label.
    """
    shape = rng.random()
    if shape < 0.35:  # clauses all agree, maybe with an overall clause
        clauses = [_clause(rng, positive) for _ in range(rng.randint(1, 2))]
        if rng.random() < 0.3:
            clauses.append(rng.choice(OVERALL_GOOD if positive else OVERALL_BAD))
    else:  # mixed cues: one or two clauses of the other polarity, then the deciding overall clause
        clauses = [_clause(rng, positive), _clause(rng, not positive)]
        rng.shuffle(clauses)
        if rng.random() < 0.3:
            clauses.insert(rng.randint(0, 2), _clause(rng, not positive))
        clauses = [clauses[0]] + [("but " if i == 1 and rng.random() < 0.6 else "and ") + c for i, c in enumerate(clauses[1:], 1)]
        clauses.append(rng.choice(OVERALL_GOOD if positive else OVERALL_BAD))
    text = ", ".join(clauses[:-1]) + (", " if len(clauses) > 1 else "") + clauses[-1] if len(clauses) > 1 else clauses[0]
    text = text.replace(", and ", " and ").replace(", but ", " but ")
    return text[0].upper() + text[1:] + "."


def sentiment_example(rng: random.Random, label: str) -> dict:
    """One ``sentiment`` example: a review about a place, its label word."""
    text = review_text(rng, label == "positive")
    if rng.random() < 0.4:
        text = f"We went to {rng.choice(NAMES)}. " + text
    return {"input": text, "output": label, "label": label}


def sentiment3_example(rng: random.Random, label: str) -> dict:
    """One ``sentiment3`` example: 1-3 aspect clauses and no overall verdict; ``moderate`` when they disagree.

    A positive or negative review has only clauses of that polarity (negation included, "not bad" is
    positive); a moderate one has 2-3 clauses with at least one of each. Telling them apart needs every
    clause's polarity and a comparison of them, not the polarity of one word.
    """
    if label == "moderate":
        polarities = [True, False] + [rng.random() < 0.5 for _ in range(rng.randint(0, 1))]
        rng.shuffle(polarities)
    else:
        polarities = [label == "positive"] * rng.randint(1, 3)
    clauses = [_clause(rng, positive) for positive in polarities]
    text = clauses[0] + "".join(rng.choice((" but ", " and ", ", ")) + clause for clause in clauses[1:])
    text = text[0].upper() + text[1:] + "."
    if rng.random() < 0.4:
        text = f"We went to {rng.choice(NAMES)}. " + text
    return {"input": text, "output": label, "label": label}


def data2text_example(rng: random.Random) -> dict:
    """One ``data2text`` example: an E2E-style meaning representation and one reference sentence."""
    record = random_restaurant(rng)
    mr = " , ".join(f"{k}[{v}]" for k, v in record.items())
    return {"input": mr, "output": describe(record, rng)}


# ---------------------------------------------------------------------------------------------
# The pretraining corpus: places, stories, episodes
VERDICT_POS = ["{p} felt positive about the visit.", "{P} verdict was positive.", "The whole evening left {p} positive.",
               "{p} wrote a positive note about it.", "In the end {p} felt positive.", "{p} gave it a positive mark."]
VERDICT_NEG = ["{p} felt negative about the visit.", "{P} verdict was negative.", "The whole evening left {p} negative.",
               "{p} wrote a negative note about it.", "In the end {p} felt negative.", "{p} gave it a negative mark."]


def place_passage(rng: random.Random) -> str:
    record = random_restaurant(rng, 4, 8)
    sentences = [describe(record, rng)]
    if rng.random() < 0.5:
        other = random_restaurant(rng, 3, 6)
        sentences.append(describe(other, rng))
    if rng.random() < 0.4:
        sentences.append(f"Many people like {record['name']} because it is {rng.choice(GOOD_ADJ)}.")
    return " ".join(sentences)


def story_passage(rng: random.Random) -> str:
    person = rng.choice(PEOPLE)
    pronoun = HE_SHE[person]
    possessive = "her" if pronoun == "she" else "his"
    positive = rng.random() < 0.5
    place = rng.choice(NAMES)
    body = review_text(rng, positive)
    opener = rng.choice([f"{person} went to {place}.", f"Last week {person} visited {place}.",
                         f"{person} had dinner at {place}.", f"{person} tried {place} with a friend."])
    said = rng.choice([f"{person} said: \"{body}\"", f"{pronoun.capitalize()} wrote that {body[0].lower()}{body[1:]}",
                       f"\"{body}\" {pronoun} told us."])
    template = rng.choice(VERDICT_POS if positive else VERDICT_NEG)
    verdict = template.format(p=person, P=possessive.capitalize())
    return " ".join([opener, said, verdict])


def misc_passage(rng: random.Random) -> str:
    """Label words in other, ordinary uses, so they are common words of the language."""
    n = rng.randint(1, 99)
    person = rng.choice(PEOPLE)
    return rng.choice([
        f"The number {n} is {'positive' if rng.random() < 0.5 else 'negative'} if you put a minus before it? No, {n} is positive and minus {n} is negative.",
        f"The test for the flu came back negative, so {person} went to work.",
        f"{person} tried to stay positive when the rain started.",
        f"The news about the bridge was negative, but the news about the park was positive.",
        f"{person} has a positive view of the city and a negative view of the traffic.",
        f"A good day is a positive thing and a bad day is a negative thing.",
        f"Happy people say positive things. Sad people often say negative things.",
    ])


# Episode mappings: each returns (x, y) pairs; the answer set is small so induction can find it.
OPPOSITES = [("hot", "cold"), ("big", "small"), ("up", "down"), ("day", "night"), ("fast", "slow"),
             ("good", "bad"), ("happy", "sad"), ("old", "new"), ("open", "closed"), ("early", "late"),
             ("light", "dark"), ("full", "empty"), ("rich", "poor"), ("high", "low"), ("wet", "dry")]
CAPITALS = [("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Japan", "Tokyo"), ("China", "Beijing"),
            ("India", "Delhi"), ("Egypt", "Cairo"), ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Chile", "Santiago"),
            ("Greece", "Athens"), ("Norway", "Oslo"), ("Poland", "Warsaw"), ("Cuba", "Havana")]
CATEGORIES = {"fruit": ["apple", "pear", "banana", "plum", "cherry", "grape", "lemon"],
              "animal": ["dog", "cat", "horse", "cow", "lion", "mouse", "sheep"],
              "colour": ["red", "green", "blue", "yellow", "purple", "orange", "pink"],
              "tool": ["hammer", "saw", "drill", "spade", "rake", "knife", "brush"]}
WEATHER_GOOD = ["sunny and warm", "a clear blue sky", "a light breeze", "mild and bright", "calm and dry"]
WEATHER_BAD = ["heavy rain", "a cold storm", "thick fog", "strong wind and hail", "freezing sleet"]
EVENTS_GOOD = ["{p} won the race", "{p} found a lost cat", "{p} got a new job", "{p} passed the exam",
               "{p} met an old friend", "{p} had a lovely birthday", "{p} got a gift", "the sun came out for {p}"]
EVENTS_BAD = ["{p} lost the keys", "{p} missed the bus", "{p} broke a leg", "{p} failed the exam",
              "{p} lost the wallet", "the car of {p} broke down", "{p} got a cold", "{p} spilled the coffee"]
POLAR_PAIRS = [("positive", "negative"), ("happy", "sad"), ("good", "bad"), ("yes", "no"), ("nice", "nasty")]
FORMATS = [  # (template of one pair, separator between pairs); keys {X}, {Y} from episode_keys
    ("{x} -> {y}", "\n"), ("{x}: {y}", "\n"), ("{x} = {y}", "\n"), ("Q: {x}\nA: {y}", "\n\n"),
    ("{x} => {y}", " ; "), ("{X}: {x}\n{Y}: {y}", "\n\n"), ("{X}: {x}\n{Y}: {y}", "\n\n"),
    ("{X}: {x}\n{Y}: {y}", "\n"), ("{x} | {y}", "\n"), ("{X} {x} {Y} {y}", "\n"), ("{X}: {x} {Y}: {y}", "\n"),
]
KEY_NAMES = {"opposite": ("Word", "Opposite"), "capital": ("Country", "Capital"), "category": ("Item", "Kind"),
             "weather": ("Weather", "Day"), "event": ("Event", "Feeling"), "parity": ("Number", "Parity"),
             "place": ("Place", "Food"), "person": ("Name", "Mood"), "story": ("Note", "Tone")}
# Keys of ``Key: ...`` episodes are mostly drawn from these pools, or made up, whatever the mapping:
# with one fixed key pair per mapping a base learned in-context *only* under the keys it had seen
# (trial 1 in the model card), so the skill must not hang on a key.
# "Review", "Sentiment", "Meaning" and "Sentence" are never used: they are the tasks' keys.
INPUT_KEYS = ["Text", "Line", "Phrase", "Item", "Entry", "Query", "Note", "Word", "Case", "Prompt", "Comment",
              "Example", "Clue", "Thing", "Key", "Sample", "Source", "Statement", "Message", "Quote", "Event",
              "Fact", "Topic", "Story", "Remark", "Input", "Question", "Visit", "Report", "Post"]
OUTPUT_KEYS = ["Label", "Answer", "Tone", "Class", "Result", "Reply", "Mood", "Tag", "Guess", "Value", "Target",
               "Verdict", "Type", "Kind", "Group", "Outcome", "Feeling", "Output", "Category", "Response", "Mark",
               "Grade", "Status", "Opinion", "Judgement", "Attitude", "Polarity", "Emotion", "Rating", "Score"]
SYLLABLES = ["ka", "lo", "mi", "zu", "ter", "vo", "ran", "sel", "qui", "bo", "nex", "dar", "fi", "gol", "pra", "wen"]


def _made_up_key(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))).capitalize()


def episode_keys(rng: random.Random, kind: str) -> tuple[str, str]:
    roll = rng.random()
    if roll < 0.2:
        return KEY_NAMES[kind]
    if roll < 0.75:
        return rng.choice(INPUT_KEYS), rng.choice(OUTPUT_KEYS)
    return (_made_up_key(rng) if rng.random() < 0.5 else rng.choice(INPUT_KEYS)), _made_up_key(rng)


def _episode_pairs(rng: random.Random, kind: str, n: int) -> list[tuple[str, str]]:
    if kind == "opposite":
        pairs = [rng.choice(OPPOSITES) for _ in range(n)]
        return [(a, b) if rng.random() < 0.5 else (b, a) for a, b in pairs]
    if kind == "capital":
        return [rng.choice(CAPITALS) for _ in range(n)]
    if kind == "category":
        out = []
        for _ in range(n):
            cat = rng.choice(list(CATEGORIES))
            out.append((rng.choice(CATEGORIES[cat]), cat))
        return out
    if kind == "parity":
        words = rng.choice([("even", "odd"), ("yes", "no"), ("positive", "negative")])
        return [(str(k), words[k % 2]) for k in (rng.randint(1, 99) for _ in range(n))]
    if kind == "place":
        out = []
        for _ in range(n):
            r = random_restaurant(rng, 8, 8)
            out.append((r["name"], r["food"]))
        return out
    pos_word, neg_word = rng.choice(POLAR_PAIRS)
    if rng.random() < 0.15:  # sometimes the mapping is flipped: the context decides, not the prior
        pos_word, neg_word = neg_word, pos_word
    out = []
    for _ in range(n):
        good = rng.random() < 0.5
        if kind == "weather":
            x = rng.choice(WEATHER_GOOD if good else WEATHER_BAD)
        elif kind in ("event", "person"):
            x = rng.choice(EVENTS_GOOD if good else EVENTS_BAD).format(p=rng.choice(PEOPLE))
        else:  # "story": a short statement about a meal, told by a person (not a review line)
            body = review_text(rng, good)[:-1]
            x = f"{rng.choice(PEOPLE)} said {body[0].lower()}{body[1:]}"
        out.append((x, pos_word if good else neg_word))
    return out


EPISODE_KINDS = ["opposite", "capital", "category", "weather", "event", "parity", "place", "person", "story"]
EPISODE_WEIGHTS = [1, 1, 1, 2, 3, 1, 1, 1, 3]


def episode_passage(rng: random.Random) -> str:
    kind = rng.choices(EPISODE_KINDS, EPISODE_WEIGHTS)[0]
    template, sep = rng.choice(FORMATS)
    key_x, key_y = episode_keys(rng, kind)
    pairs = _episode_pairs(rng, kind, rng.randint(6, 16))
    return sep.join(template.format(x=x, y=y, X=key_x, Y=key_y) for x, y in pairs)


PASSAGES = [(place_passage, 0.22), (story_passage, 0.22), (misc_passage, 0.04), (episode_passage, 0.52)]


def corpus_documents(seed: int, num_documents: int):
    """Yield ``num_documents`` passages of the pretraining corpus (deterministic in ``seed``)."""
    rng = random.Random(seed)
    makers, weights = zip(*PASSAGES)
    for _ in range(num_documents):
        yield rng.choices(makers, weights)[0](rng)


# ---------------------------------------------------------------------------------------------
# The curriculum after the world corpus: induction, then label mapping by polarity
#
# Pairs of ordinary words that label polarity episodes in either direction, so a label word says
# nothing by itself: only the earlier examples of the same episode tell which word goes with which
# polarity. The task's own pair (positive/negative) is among them; blue/red and high/low never label
# a curriculum episode (blue/red labels nothing anywhere in pretraining), so the probe can check that
# the skill is not tied to words seen as labels.
PROBE_ONLY_PAIRS = [("blue", "red"), ("high", "low")]
LABEL_PAIRS = [pair for pair in OPPOSITES + POLAR_PAIRS + [
    ("apple", "pear"), ("dog", "cat"), ("green", "yellow"), ("Paris", "Rome"), ("hammer", "saw"), ("even", "odd"),
    ("fruit", "animal"), ("tea", "coffee")] if pair not in PROBE_ONLY_PAIRS and pair[::-1] not in PROBE_ONLY_PAIRS]
# Episode formats that put the label on a second line or after a key, like the task's template.
KEYED_FORMATS = [f for f in FORMATS if "\n" in f[0] or "{X}" in f[0]]
REPEAT_WORDS = sorted({w for pair in OPPOSITES for w in pair} | set(GOOD_ADJ) | set(BAD_ADJ) | set(PEOPLE)
                      | {w for words in CATEGORIES.values() for w in words})


def repeat_passage(rng: random.Random) -> str:
    """Random words with spans of themselves repeated later: predicting a repeat needs *induction*
    (find the earlier occurrence, copy what followed), the skill the world corpus alone never taught."""
    words = [rng.choice(REPEAT_WORDS) for _ in range(rng.randint(20, 60))]
    for _ in range(rng.randint(2, 4)):
        start = rng.randrange(len(words))
        filler = [rng.choice(REPEAT_WORDS) for _ in range(rng.randint(0, 8))]
        words += filler + words[start:start + rng.randint(4, 16)]
    return " ".join(words)


def polarity_item(rng: random.Random, kind: str, good: bool) -> str:
    """An input whose polarity is ``good``: one adjective, one aspect clause, or a whole review."""
    if kind == "word":
        return rng.choice(GOOD_ADJ if good else BAD_ADJ)
    if kind == "clause":
        return _clause(rng, good)
    return review_text(rng, good)


def polarity_episode(rng: random.Random, kind: str, keyed: float = 0.0, repeat: float = 0.2) -> str:
    """8-20 inputs of one ``kind`` labelled with a word pair from ``LABEL_PAIRS`` in a random direction;
    ``repeat`` of the inputs are exact repeats of earlier ones; ``keyed`` of the episodes use a
    ``KEYED_FORMATS`` format. Only polarity-matched copying from the earlier examples predicts a label."""
    template, sep = rng.choice(KEYED_FORMATS) if rng.random() < keyed else rng.choice(FORMATS)
    key_x, key_y = episode_keys(rng, "story")
    pos_word, neg_word = rng.choice(LABEL_PAIRS)
    if rng.random() < 0.5:
        pos_word, neg_word = neg_word, pos_word
    pairs: list[tuple[str, str]] = []
    for _ in range(rng.randint(8, 20)):
        if pairs and rng.random() < repeat:
            pairs.append(rng.choice(pairs))
            continue
        good = rng.random() < 0.5
        pairs.append((polarity_item(rng, kind, good), pos_word if good else neg_word))
    return sep.join(template.format(x=x, y=y, X=key_x, Y=key_y) for x, y in pairs)


# Each stage after the world corpus: passage shares ("world" = ``corpus_documents``).
STAGE_MIXES = {
    "induction": {"repeat": 0.6, "world": 0.4},
    "polarity": {"word": 0.3, "clause": 0.15, "review": 0.2, "repeat": 0.2, "world": 0.15},
    "formats": {"word": 0.3, "clause": 0.15, "review": 0.2, "repeat": 0.2, "world": 0.15},
    "reviews": {"word": 0.1, "clause": 0.2, "review": 0.4, "repeat": 0.15, "world": 0.15},
}
STAGE_KEYED = {"induction": 0.0, "polarity": 0.0, "formats": 0.7, "reviews": 0.7}  # share of keyed episode formats


def stage_documents(stage: str, seed: int, num_documents: int) -> list[str]:
    """The ``num_documents`` passages of a curriculum stage (deterministic in ``stage`` and ``seed``)."""
    if stage not in STAGE_MIXES:
        raise ValueError(f"unknown stage {stage!r}; known: {', '.join(STAGE_MIXES)}")
    rng = random.Random(f"{stage}-{seed}")
    world = corpus_documents(seed + 7919 * (1 + list(STAGE_MIXES).index(stage)), num_documents)
    kinds, weights = zip(*STAGE_MIXES[stage].items())
    out = []
    for _ in range(num_documents):
        kind = rng.choices(kinds, weights)[0]
        if kind == "world":
            out.append(next(world))
        elif kind == "repeat":
            out.append(repeat_passage(rng))
        else:
            out.append(polarity_episode(rng, kind, keyed=STAGE_KEYED[stage]))
    return out


def task_examples(task: str, seed: int, sizes: dict[str, int]) -> dict[str, list[dict]]:
    """The splits of a task (``sentiment`` and ``sentiment3`` balanced by label), each a list of JSON-ready dicts.

    Splits are drawn from independent streams and the test split never shares an input with the
    others.
    """
    out: dict[str, list[dict]] = {}
    seen: set[str] = set()
    for index, split in enumerate(("test", "validation", "train")):
        rng = random.Random(f"{task}-{seed}-{index}")
        rows: list[dict] = []
        while len(rows) < sizes[split]:
            if task == "sentiment":
                row = sentiment_example(rng, LABELS[len(rows) % 2])
            elif task == "sentiment3":
                row = sentiment3_example(rng, LABELS3[len(rows) % 3])
            elif task == "data2text":
                row = data2text_example(rng)
            else:
                raise ValueError(f"unknown task {task!r}; known: {', '.join(KNOWN_TASKS)}")
            if row["input"] in seen:
                continue
            seen.add(row["input"])
            rows.append(row)
        rng.shuffle(rows)
        out[split] = rows
    return out
