"""console.memo.remember: a dict kept to a bounded size, the oldest entries dropped first."""

from __future__ import annotations

import threading

from console.memo import remember


def test_it_keeps_at_most_its_limit_dropping_the_oldest():
    store: dict[str, int] = {}
    for i in range(5):
        assert remember(store, f"k{i}", i, 3) == i
    assert store == {"k2": 2, "k3": 3, "k4": 4}


def test_a_store_already_over_its_limit_shrinks_to_it():
    store = {f"k{i}": i for i in range(10)}
    remember(store, "new", 99, 4)
    assert list(store) == ["k7", "k8", "k9", "new"]


def test_a_limit_of_one_keeps_the_last_and_zero_keeps_only_it():
    store: dict[str, int] = {}
    remember(store, "a", 1, 1)
    remember(store, "b", 2, 1)
    assert store == {"b": 2}
    remember(store, "c", 3, 0)
    assert store == {"c": 3}


def test_threads_remembering_at_once_never_fail_nor_pass_the_limit_by_more_than_they_are():
    store: dict[int, int] = {}
    errors: list[BaseException] = []

    def work(base: int) -> None:
        try:
            for i in range(2000):
                remember(store, base + i, i, 50)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n * 10_000,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(store) <= 50 + len(threads)
