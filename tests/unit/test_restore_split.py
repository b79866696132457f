"""How a large restore's partitions are shared out among the worker processes."""

from processors.runtime.restore_worker import split


def test_split_balances_records_over_the_workers():
    assert split({0: 10, 1: 10, 2: 10, 3: 10, 4: 10, 5: 10}, 2) == [[0, 2, 4], [1, 3, 5]]
    assert split({0: 100, 1: 10, 2: 10, 3: 80}, 2) == [[0], [1, 2, 3]]
    assert split({0: 5, 1: 5}, 4) == [[0], [1]]
