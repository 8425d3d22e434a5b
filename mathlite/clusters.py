"""Group sampled answers into clusters of equivalent answers (majority vote, re-ranking).

Liu et al. (2023) sample many solutions per problem and re-rank them by the size of the
cluster their final answer belongs to. With 64 samples per problem, comparing every pair
with a symbolic grader would cost 2,016 comparisons per problem; most of them are avoided:

1. Every answer gets a canonical *key*: its normalized string, or ``num:p/q`` when it is a
   plain number, so ``0.5``, ``.5``, ``\\frac{1}{2}`` and ``\\dfrac12`` share a key for free.
2. Only the distinct keys are compared, each new key against the keys of the existing
   clusters (all of them for the cluster it joins: equivalence is not always transitive).
   Two different ``num:`` keys are different numbers by construction and are never compared.
3. The remaining comparisons go through the answer engine, whose float fingerprints
   reject unequal pairs in microseconds and whose results are cached per pair.
"""

from __future__ import annotations

from functools import lru_cache

from mathlite.answers import _equiv_normalized, exact_number, normalize_answer

__all__ = ["answer_key", "cluster_answers"]

_NUMBER_PREFIX = "num:"


def answer_key(s: str | None) -> str | None:
    """Canonical key of an answer; equal keys mean equivalent answers. None for no answer.

    ``num:p/q`` for plain numbers (``0.5`` -> ``num:1/2``), otherwise the normalized string.
    Different keys may still be equivalent (``2\\sqrt{2}`` and ``\\sqrt{8}``): that is what
    :func:`cluster_answers` checks symbolically.
    """
    if not isinstance(s, str):
        return None
    return _key(s)[0]


# Numbers larger than this keep their text key (and are compared symbolically): printing
# a 30,000-digit integer costs more than it saves, and Python refuses beyond 4,300 digits.
_MAX_KEY_BITS = 4096


@lru_cache(maxsize=1 << 16)
def _key(s: str) -> tuple[str | None, str, bool]:
    """(key, normalized answer, is the key an exact number?)."""
    normalized = normalize_answer(s)
    if not normalized:
        return None, "", False
    value = exact_number(normalized)
    if value is not None and max(value.numerator.bit_length(), value.denominator.bit_length()) <= _MAX_KEY_BITS:
        return f"{_NUMBER_PREFIX}{value.numerator}/{value.denominator}", normalized, True
    if normalized.startswith(_NUMBER_PREFIX):  # an answer that literally reads "num:..."
        return "text:" + normalized, normalized, False
    return normalized, normalized, False


def cluster_answers(answers: list[str | None]) -> list[list[int]]:
    """Indices of mutually equivalent answers, grouped; largest cluster first.

    Ties are broken by the earliest first occurrence. ``None``, non-strings and empty
    answers belong to no cluster. Members of a cluster are in increasing index order.
    """
    members: dict[str, list[int]] = {}  # key -> indices, in order of first occurrence
    normalized: dict[str, str] = {}
    is_number: dict[str, bool] = {}
    for i, answer in enumerate(answers):
        if not isinstance(answer, str):
            continue
        key, norm, number = _key(answer)
        if key is None:
            continue
        if key not in members:
            members[key] = []
            normalized[key] = norm
            is_number[key] = number
        members[key].append(i)

    def same(a: str, b: str) -> bool:
        if is_number[a] and is_number[b]:
            return False  # two different exact numbers
        return _equiv_normalized(normalized[a], normalized[b])

    # Equivalence is not always transitive (`2x+1` equals both `y=2x+1` and `z=2x+1`, which
    # differ), so a key joins a cluster only if it is equivalent to every key already in it,
    # and keys are visited in an order that does not depend on the order of the answers
    # (most frequent first, then by key): the clusters do not depend on it either.
    clusters: list[list[str]] = []  # lists of keys
    for key in sorted(members, key=lambda k: (-len(members[k]), k)):
        for cluster in clusters:
            if all(same(other, key) for other in cluster):
                cluster.append(key)
                break
        else:
            clusters.append([key])

    groups = [sorted(i for key in cluster for i in members[key]) for cluster in clusters]
    groups.sort(key=lambda g: (-len(g), g[0]))
    return groups
