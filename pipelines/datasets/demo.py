"""The bundled demo data (``data/demo``): an interaction log and a BEIR corpus whose ground truth is planted.

Everything is drawn from one seed (:class:`DemoSpec`), so ``make demo`` and the tests run on data whose structure
is known. ``regkit data demo --out data/demo --overwrite`` regenerates the committed copy; a test checks that the
committed files equal the generator's output.

**Recommendation log** (``recsys/interactions.parquet``, ``items.parquet``, ``users.parquet``):

1. *Latent item factors.* Item ``i`` gets a latent taste ``z_i ~ Uniform{0..K-1}`` (``K`` = ``tastes``); the
   item's latent factor is the one-hot vector ``e_{z_i}``.
2. *Power-law popularity.* ``pop_i ∝ 1 / r_i^s`` with ``r`` a random permutation of ``1..I`` and ``s`` =
   ``zipf`` (a Zipf law over a random item order: a few head items, a long tail).
3. *Item features correlated with the latent factor* (so the features share mutual information through ``z``,
   which is what Correlated Feature Masking ranks partners by, and a tail item's features tell its taste):

   * ``genres``: a primary genre ``g(z_i)`` with probability ``feature_fidelity`` (else a uniform genre), plus
     0–2 uniform extra genres (a multi-valued feature);
   * ``studio``: one of the two studios of taste ``z_i`` with probability ``feature_fidelity`` (else any studio);
   * ``year``: decade ``1960 + 10·((z_i + b) mod 6)`` with ``b ~ Bernoulli(0.3)``, year uniform in the decade.

4. *Users.* Taste mixture ``θ_u ~ Dirichlet(user_concentration · 1_K)`` (mostly one or two tastes);
   ``age_bucket`` leans on the user's dominant taste (probability 0.6), ``gender`` is uniform.
5. *Interactions.* ``n_u ~ Uniform[interactions_per_user)`` draws, each independently: with probability
   ``taste_share`` pick a taste ``t ~ θ_u`` and an item of that taste with probability ``∝ pop_i``; otherwise an
   item with probability ``∝ pop_i`` (popularity noise). Repeats are dropped; timestamps increase; ``rating`` is
   4–5 for items of the user's dominant taste, 3–4 for other tastes picked by taste, 1–3 for noise picks.

**Retrieval corpus** (``beir/`` in the BEIR layout, splits ``train`` and ``test``): ``topics`` topics, each with a
themed word list (:data:`TOPIC_WORDS`, real English words so queries and hits read naturally and a dense model
understands them). A document of topic ``t`` has a title of two topic words and a text of 5–9 words of its topic,
8–16 generic background words and 0–3 *distractor* words of another random topic. A query is 2–3 words of one
topic. **Planted relevance:** every document of the query's topic is relevant, with grade 2 when it contains
every query word and grade 1 otherwise (vocabulary mismatch: relevant but lexically incomplete); documents of
other topics are not relevant, even when a distractor word matches. Train and test queries are disjoint draws.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl

from common_regs.io import atomic_dir

logger = logging.getLogger(__name__)

__all__ = ["GENRES", "TOPIC_WORDS", "DemoSpec", "DemoTruth", "generate_demo", "write_demo_data"]

GENRES = ("action", "comedy", "drama", "horror", "romance", "scifi", "documentary", "animation")
AGE_BUCKETS = ("18-24", "25-34", "35-44", "45-49", "50-55", "56+")

TOPIC_WORDS: dict[str, tuple[str, ...]] = {
    "astronomy": ("star", "planet", "orbit", "telescope", "comet", "galaxy", "moon", "solar", "asteroid",
                  "cosmic", "eclipse", "meteor"),
    "cooking": ("recipe", "oven", "bake", "flour", "butter", "garlic", "sauce", "dough", "simmer", "spice",
                "kitchen", "roast"),
    "football": ("goal", "striker", "referee", "penalty", "league", "midfield", "stadium", "coach", "tackle",
                 "keeper", "match", "offside"),
    "medicine": ("patient", "dose", "vaccine", "symptom", "clinic", "therapy", "infection", "surgeon", "fever",
                 "diagnosis", "nurse", "tablet"),
    "finance": ("stock", "bond", "dividend", "interest", "loan", "inflation", "investor", "bank", "portfolio",
                "market", "credit", "equity"),
    "gardening": ("soil", "seed", "compost", "prune", "bloom", "weed", "shrub", "tulip", "mulch", "garden",
                  "harvest", "fertilizer"),
    "music": ("guitar", "melody", "chord", "drum", "concert", "singer", "piano", "rhythm", "album", "violin",
              "orchestra", "lyrics"),
    "computing": ("software", "compiler", "memory", "processor", "database", "kernel", "server", "code",
                  "network", "algorithm", "python", "debug"),
    "ocean": ("whale", "coral", "reef", "tide", "shark", "wave", "dolphin", "salt", "current", "diver",
              "seabed", "plankton"),
    "weather": ("rain", "storm", "cloud", "thunder", "forecast", "humidity", "wind", "snow", "hurricane",
                "drought", "frost", "temperature"),
    "history": ("empire", "king", "war", "treaty", "dynasty", "castle", "revolution", "ancient", "medieval",
                "colony", "siege", "throne"),
    "chemistry": ("molecule", "acid", "atom", "reaction", "electron", "isotope", "catalyst", "oxygen", "carbon",
                  "solvent", "crystal", "enzyme"),
    "travel": ("passport", "airport", "hotel", "flight", "luggage", "tourist", "beach", "visa", "ticket",
               "journey", "map", "museum"),
    "cars": ("engine", "wheel", "brake", "fuel", "gear", "tire", "driver", "clutch", "exhaust", "sedan",
             "highway", "battery"),
    "birds": ("feather", "nest", "wing", "beak", "eagle", "owl", "sparrow", "migration", "egg", "parrot",
              "flock", "hawk"),
    "law": ("court", "judge", "lawyer", "verdict", "contract", "appeal", "jury", "statute", "lawsuit",
            "evidence", "witness", "attorney"),
    "painting": ("canvas", "brush", "portrait", "palette", "oil", "gallery", "sketch", "color", "easel",
                 "fresco", "landscape", "pigment"),
    "farming": ("cattle", "wheat", "tractor", "barn", "dairy", "crop", "plough", "sheep", "irrigation",
                "grain", "pasture", "farmer"),
    "volcanoes": ("lava", "magma", "eruption", "crater", "ash", "volcano", "tectonic", "basalt", "geyser",
                  "summit", "plume", "quake"),
    "chess": ("bishop", "knight", "rook", "pawn", "checkmate", "opening", "gambit", "endgame", "castling",
              "queen", "tournament", "grandmaster"),
    "energy": ("renewable", "turbine", "grid", "coal", "nuclear", "reactor", "voltage", "electricity", "hydrogen",
               "pipeline", "emissions", "power"),
    "dogs": ("puppy", "leash", "bark", "breed", "kennel", "collar", "retriever", "terrier", "fetch", "vet",
             "tail", "paw"),
    "architecture": ("tower", "bridge", "facade", "column", "arch", "concrete", "dome", "blueprint", "steel",
                     "skyscraper", "vault", "beam"),
    "fitness": ("workout", "muscle", "cardio", "yoga", "stretch", "protein", "treadmill", "squat", "sprint",
                "endurance", "gym", "weights"),
}
BACKGROUND_WORDS: tuple[str, ...] = (
    "report", "study", "people", "new", "year", "local", "group", "small", "large", "early", "late", "common",
    "recent", "public", "general", "important", "several", "example", "result", "change", "level", "part",
    "case", "system", "world", "life", "time", "work", "place", "point", "fact", "way", "number", "day",
    "week", "month", "often", "rarely", "many", "few", "first", "second", "simple", "modern", "classic",
    "popular", "known", "useful", "basic", "detail", "story", "guide", "review", "issue", "topic", "idea",
)


@dataclass(frozen=True)
class DemoSpec:
    """Sizes and knobs of the demo data (module docstring: the generative process). Defaults keep the demo fast."""

    seed: int = 7
    users: int = 600
    items: int = 400
    tastes: int = 6
    zipf: float = 0.9
    feature_fidelity: float = 0.85
    user_concentration: float = 0.3
    taste_share: float = 0.8
    interactions_per_user: tuple[int, int] = (20, 80)
    topics: int = 24
    docs_per_topic: int = 10
    queries_per_topic: int = 2
    train_queries_per_topic: int = 4

    def __post_init__(self) -> None:
        for name in ("users", "items", "tastes", "topics", "docs_per_topic", "queries_per_topic"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}.")
        if self.topics > len(TOPIC_WORDS):
            raise ValueError(f"`topics` must be <= {len(TOPIC_WORDS)} (themed word lists), got {self.topics}.")
        if self.tastes > len(GENRES):
            raise ValueError(f"`tastes` must be <= {len(GENRES)} (one primary genre per taste), got {self.tastes}.")
        low, high = self.interactions_per_user
        if not 1 <= low < high:
            raise ValueError(f"`interactions_per_user` must be (low, high) with 1 <= low < high, got {(low, high)}.")
        for name in ("feature_fidelity", "taste_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"`{name}` must be in [0, 1], got {getattr(self, name)}.")
        if self.train_queries_per_topic < 0:
            raise ValueError(f"`train_queries_per_topic` must be >= 0, got {self.train_queries_per_topic}.")


@dataclass(frozen=True)
class DemoTruth:
    """The latent structure behind the generated tables (for tests and the demo report)."""

    item_taste: np.ndarray  # (items,) z_i
    item_popularity: np.ndarray  # (items,) pop_i, sums to 1
    user_tastes: np.ndarray  # (users, tastes) θ_u
    doc_topic: dict[str, str]  # doc id -> topic name
    query_topic: dict[str, str]  # query id -> topic name


def _recsys_tables(spec: DemoSpec, rng: np.random.Generator) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame,
                                                                        dict[str, np.ndarray]]:
    k = spec.tastes
    taste = rng.integers(0, k, size=spec.items)
    popularity = rng.permutation(1.0 / np.arange(1, spec.items + 1) ** spec.zipf)
    popularity /= popularity.sum()
    faithful = rng.random(spec.items) < spec.feature_fidelity
    primary = np.where(faithful, taste, rng.integers(0, len(GENRES), size=spec.items))
    genres = [sorted({int(p), *rng.choice(len(GENRES), size=int(rng.integers(0, 3)), replace=False).tolist()})
              for p in primary]
    studio_faithful = rng.random(spec.items) < spec.feature_fidelity
    studio = np.where(studio_faithful, 2 * taste + rng.integers(0, 2, size=spec.items),
                      rng.integers(0, 2 * k, size=spec.items))
    decade = 1960 + 10 * ((taste + (rng.random(spec.items) < 0.3)) % 6)
    year = decade + rng.integers(0, 10, size=spec.items)
    theta = rng.dirichlet(np.full(k, spec.user_concentration), size=spec.users)
    dominant = theta.argmax(axis=1)
    by_taste = [np.flatnonzero(taste == t) for t in range(k)]
    within = [popularity[m] / popularity[m].sum() if m.size else m for m in by_taste]
    rows = []
    clock = 1_600_000_000
    for user in range(spec.users):
        count = int(rng.integers(*spec.interactions_per_user))
        from_taste = rng.random(count) < spec.taste_share
        picked = rng.choice(k, size=count, p=theta[user])
        seen: set[int] = set()
        for by_pref, t in zip(from_taste.tolist(), picked.tolist(), strict=True):
            if by_pref and by_taste[t].size:
                item = int(rng.choice(by_taste[t], p=within[t]))
            else:
                item = int(rng.choice(spec.items, p=popularity))
            if item in seen:
                continue
            seen.add(item)
            clock += int(rng.integers(1, 600))
            if by_pref:
                rating = int(rng.integers(4, 6)) if taste[item] == dominant[user] else int(rng.integers(3, 5))
            else:
                rating = int(rng.integers(1, 4))
            rows.append((user + 1, item + 1, clock, float(rating)))
    interactions = pl.DataFrame(
        rows, schema={"user_id": pl.Int64, "item_id": pl.Int64, "timestamp": pl.Int64, "rating": pl.Float64},
        orient="row",
    ).sort("user_id", "timestamp")
    items = pl.DataFrame({
        "item_id": np.arange(1, spec.items + 1),
        "title": [f"demo item {i}" for i in range(1, spec.items + 1)],
        "year": year.astype(np.int32),
        "genres": [[GENRES[g] for g in names] for names in genres],
        "studio": [f"studio{s:02d}" for s in studio],
    })
    age = np.where(rng.random(spec.users) < 0.6, dominant % len(AGE_BUCKETS),
                   rng.integers(0, len(AGE_BUCKETS), size=spec.users))
    users = pl.DataFrame({
        "user_id": np.arange(1, spec.users + 1),
        "age_bucket": [AGE_BUCKETS[a] for a in age],
        "gender": rng.choice(["F", "M"], size=spec.users),
    })
    return interactions, items, users, {"item_taste": taste, "item_popularity": popularity, "user_tastes": theta}


def _beir_files(spec: DemoSpec, rng: np.random.Generator) -> tuple[list[dict], list[dict], dict[str, list],
                                                                     dict[str, dict[str, str]]]:
    names = list(TOPIC_WORDS)[: spec.topics]
    corpus: list[dict] = []
    queries: list[dict] = []
    qrels: dict[str, list] = {"train": [], "test": []}
    doc_topic: dict[str, str] = {}
    query_topic: dict[str, str] = {}
    for number, topic in enumerate(names):
        words = TOPIC_WORDS[topic]
        docs = []
        for index in range(spec.docs_per_topic):
            own = rng.choice(words, size=int(rng.integers(5, 10))).tolist()
            background = rng.choice(BACKGROUND_WORDS, size=int(rng.integers(8, 17))).tolist()
            other = names[(number + int(rng.integers(1, len(names)))) % len(names)] if len(names) > 1 else topic
            distractors = rng.choice(TOPIC_WORDS[other], size=int(rng.integers(0, 4))).tolist()
            tokens = rng.permutation(np.array(own + background + distractors, dtype=object)).tolist()
            title = rng.choice(words, size=2, replace=False).tolist()
            doc_id = f"d{number:02d}{index:02d}"
            docs.append((doc_id, set(tokens) | set(title)))
            doc_topic[doc_id] = topic
            corpus.append({"_id": doc_id, "title": " ".join(title), "text": " ".join(tokens)})
        for split, prefix, count in (("test", "q", spec.queries_per_topic),
                                     ("train", "t", spec.train_queries_per_topic)):
            for index in range(count):
                terms = rng.choice(words, size=int(rng.integers(2, 4)), replace=False).tolist()
                query_id = f"{prefix}{number:02d}{index}"
                query_topic[query_id] = topic
                queries.append({"_id": query_id, "text": " ".join(terms)})
                qrels[split] += [(query_id, doc_id, 2 if set(terms) <= vocabulary else 1)
                                 for doc_id, vocabulary in docs]
    return corpus, queries, qrels, {"doc_topic": doc_topic, "query_topic": query_topic}


def generate_demo(spec: DemoSpec = DemoSpec()) -> tuple[dict[str, pl.DataFrame], dict[str, object], DemoTruth]:
    """The demo tables (``interactions``, ``items``, ``users``), BEIR contents and the latent truth, from ``spec``."""
    rng = np.random.default_rng(spec.seed)
    interactions, items, users, latent = _recsys_tables(spec, rng)
    corpus, queries, qrels, topics = _beir_files(spec, rng)
    truth = DemoTruth(**latent, **topics)
    return ({"interactions": interactions, "items": items, "users": users},
            {"corpus": corpus, "queries": queries, "qrels": qrels}, truth)


def write_demo_data(out: str | Path, spec: DemoSpec = DemoSpec(), *, overwrite: bool = False) -> Path:
    """Write ``out/recsys/{interactions,items,users}.parquet``, ``out/beir/`` (BEIR layout) and ``out/spec.json``."""
    out = Path(out)
    tables, beir_files, _ = generate_demo(spec)
    with atomic_dir(out, overwrite=overwrite, markers=("spec.json",)) as tmp:
        (tmp / "recsys").mkdir()
        for name, table in tables.items():
            table.write_parquet(tmp / "recsys" / f"{name}.parquet", statistics=False)
        beir = tmp / "beir"
        (beir / "qrels").mkdir(parents=True)
        (beir / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in beir_files["corpus"]))
        (beir / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in beir_files["queries"]))
        for split, rows in beir_files["qrels"].items():
            if rows:
                (beir / "qrels" / f"{split}.tsv").write_text(
                    "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in rows)
                )
        (tmp / "spec.json").write_text(json.dumps(asdict(spec), indent=2) + "\n")
    logger.info("wrote demo data to %s: %d interactions, %d documents", out, tables["interactions"].height,
                len(beir_files["corpus"]))
    return out
