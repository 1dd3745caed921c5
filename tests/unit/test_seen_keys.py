"""In-run dedup (issue 18): exact on the full key whatever the hashes, every run size, bounded memory."""

from __future__ import annotations

import random

import pytest

from airflow_provider_gravity.conversions.run import seen_keys
from airflow_provider_gravity.conversions.run.seen_keys import SeenKeys


@pytest.fixture
def tiny_runs(monkeypatch):
    """Runs on disk from 64 keys on, 4 records a page: a few thousand keys go through every level and path."""
    monkeypatch.setattr(seen_keys, "MEMORY_RUN_RECORDS", 64)
    monkeypatch.setattr(seen_keys, "PAGE_RECORDS", 4)
    monkeypatch.setattr(seen_keys, "MERGE_BLOCK", 16)
    monkeypatch.setattr(seen_keys, "LOOKUP_BATCH", 3)
    monkeypatch.setattr(seen_keys, "KEY_READ_BYTES", 8)  # keys longer than a read are read again, longer


def reference(chunks):
    seen, answers = set(), []
    for keys in chunks:
        answer = []
        for key in keys:
            answer.append(key not in seen)
            seen.add(key)
        answers.append(answer)
    return answers


def random_chunks(rng, chunks, distinct):
    odd = [("Purchase", "é-1"), ("Purchase", "\ud800"), ("Lead", "a\x00b"), ("Lead", None), ("Lead", 7), ("", "")]
    out = []
    for _ in range(chunks):
        keys = [
            (rng.choice(["Purchase", "Lead"]), f"order-{rng.randrange(distinct)}") for _ in range(rng.randrange(120))
        ]
        keys += rng.sample(odd, rng.randrange(2))
        rng.shuffle(keys)
        out.append(keys)
    return out


@pytest.mark.parametrize(
    "hash_function",
    [None, lambda key: hash(key) % 13, lambda key: 0],
    ids=["parts' own hashes", "13 hashes for all keys", "one hash for all keys"],
)
def test_answers_are_those_of_a_set_of_full_keys_over_many_chunks(tiny_runs, hash_function):
    rng = random.Random(18)
    chunks = random_chunks(rng, 300 if hash_function is None else 60, 3_000)

    with SeenKeys(hash_function=hash_function) as seen:
        answers = [seen.first_occurrences(keys) for keys in chunks]
        runs_on_disk = sum(run.on_disk for level in seen._levels for run in level)

    assert answers == reference(chunks)
    assert runs_on_disk, "the test went through runs on disk"


def test_two_keys_with_one_hash_are_both_kept_and_each_found_again(tiny_runs):
    class Colliding(str):
        """A key part whose hash is the same for every value: whole keys collide, whatever the hash of tuples."""

        def __hash__(self):
            return 42

    first, second = (Colliding("Purchase"), Colliding("1")), (Colliding("Purchase"), Colliding("2"))
    for hash_function in (None, lambda key: 42):
        with SeenKeys(hash_function=hash_function) as seen:
            assert seen.first_occurrences([first]) == [True]
            assert seen.first_occurrences([second]) == [True], "a real event, not a duplicate of its hash's twin"
            assert seen.first_occurrences([second, first, ("Purchase", "3")]) == [False, False, True]
            for start in range(0, 2_000, 100):  # the two go down to runs on disk, and stay apart
                seen.first_occurrences(
                    [(Colliding("Purchase"), Colliding(str(i))) for i in range(start + 10, start + 110)]
                )
            assert seen.first_occurrences([first, second, (Colliding("Purchase"), Colliding("5000"))]) == [
                False,
                False,
                True,
            ]
            assert seen.keys_read > 0, "candidates were confirmed on their full keys"


def test_a_full_filter_keeps_the_answers_exact(tiny_runs):
    rng = random.Random(7)
    chunks = random_chunks(rng, 200, 2_000)

    with SeenKeys(max_filter_bytes=64) as seen:  # 512 bits for thousands of keys: nearly every key a candidate
        answers = [seen.first_occurrences(keys) for keys in chunks]
        assert seen.memory_bytes < 64 + 4 * 64 * 16 * 3 + 1_000

    assert answers == reference(chunks)


def test_within_a_chunk_only_the_first_of_equal_keys_is_new():
    with SeenKeys() as seen:
        assert seen.first_occurrences([("P", "1"), ("P", "2"), ("P", "1"), ("Lead", "1")]) == [True, True, False, True]
        assert seen.first_occurrences([]) == []
        assert seen.first_occurrences([("P", "2"), ("P", "3"), ("P", "3")]) == [False, True, False]
        assert len(seen) == 4


def test_keys_given_as_columns_are_the_same_keys():
    with SeenKeys() as seen:
        assert seen.first_occurrences_of(["P", "P", "P"], ["1", "2", "1"]) == [True, True, False]
        assert seen.first_occurrences([("P", "2"), ("P", "3")]) == [False, True]
        assert seen.first_occurrences_of(("P",), ("3",)) == [False]


def test_the_mask_of_first_occurrences_answers_as_the_list_does():
    with SeenKeys() as seen:
        mask = seen.first_occurrence_mask(["P", "P", "P"], ["1", "2", "1"])
        assert mask.dtype == bool
        assert mask.tolist() == [True, True, False]
        assert seen.first_occurrence_mask(["P", "Lead"], ["2", "2"]).tolist() == [False, True]
        assert len(seen.first_occurrence_mask([], [])) == 0


def test_keys_of_one_call_have_one_number_of_parts():
    with SeenKeys() as seen, pytest.raises(ValueError, match="one number of parts"):
        seen.first_occurrences([("P", "1"), ("P",)])


def test_memory_stays_small_and_the_keys_go_to_disk():
    with SeenKeys() as seen:
        for start in range(0, 400_000, 10_000):
            seen.first_occurrences([("Purchase", f"order-{i}") for i in range(start, start + 10_000)])
        assert len(seen) == 400_000
        # The filter (10 to 20 bits a key), the runs kept in memory (at most 3 MiB), a hash a page on disk.
        assert seen.memory_bytes < 400_000 * 20 // 8 + (3 << 20) + 400_000 // 16
        assert seen.disk_bytes > 400_000 * (16 + len("Purchase") + len("order-0") + 2)
